"""Mutual TLS between real node processes: only certificates of the mesh CA get in, a node
must show its own, revoked nodes are refused everywhere, certificates renew themselves.

Both servers are tested with the same ECDSA P-256 certificates: uvicorn (HTTP) and Arrow
Flight (gRPC), each as server and as client.
"""

from __future__ import annotations

import itertools
import ssl

import httpx
import pyarrow.flight as flight
import pyarrow.parquet as pq
import pytest
from cryptography import x509

from shoal import audit
from shoal.audit.trail import entry_time
from shoal.config import open_home
from shoal.localmesh import LocalMesh, wait_until
from shoal.mesh.authority import Authority, new_private_key, private_key_pem, public_key_pem
from shoal.mesh.peers import FRAGMENT_PATH, signed_headers
from shoal.mesh.tls import CERT_BACKDATE, RENEW_WHEN_LEFT, NodeTLS, server_name, user_context
from tests.mesh.processes import shoal

from .conftest import ORDERS

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow, pytest.mark.timeout(300)]

CATALOG = "/api/v1/mesh/catalog"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    root = tmp_path_factory.mktemp("tls")
    local = LocalMesh(root / "mesh")
    try:
        local.start([("hq", "eu-de"), ("berlin", "eu-de"), ("munich", "eu-de")])
        pq.write_table(ORDERS, root / "orders.parquet")
        for name in ("berlin", "munich"):
            shoal("publish", "orders", str(root / "orders.parquet"), home=local.nodes[name].home)
        local.wait_for_catalog({"berlin.orders", "munich.orders"})
        yield local, root
    finally:
        local.stop()


def _catalog_call(local, caller: str, target: str, context: ssl.SSLContext) -> httpx.Response:
    """GET the catalog of `target`, signed by `caller`, over TLS made with `context`."""
    headers = signed_headers(open_home(local.nodes[caller].home), target, "GET", CATALOG)
    with httpx.Client(verify=context, timeout=10) as client:
        return client.get(
            local.nodes[target].http + CATALOG,
            headers=headers,
            extensions={"sni_hostname": server_name(target)},
        )


def _foreign_context(local, root, name: str) -> ssl.SSLContext:
    """A client context with a certificate for node `name` from another CA (the mesh CA
    still trusted, so the server is checked as usual)."""
    other = Authority.create(root / "foreign-ca", "mallory")
    key = new_private_key()
    tls = NodeTLS(root / f"foreign-{name}")
    ca = NodeTLS(local.nodes["hq"].home).ca_pem()
    tls.install(other.issue(name, public_key_pem(key), 24), private_key_pem(key), ca)
    return tls.client_context()


def test_every_listener_is_tls_and_plain_http_gets_nothing(mesh):
    local, _ = mesh
    for node in local.nodes.values():
        assert node.http.startswith("https://") and node.flight.startswith("grpc+tls://")
        plain = node.http.replace("https://", "http://")
        with pytest.raises(httpx.HTTPError):
            httpx.get(plain + "/health", timeout=5)


def test_a_node_calls_with_its_own_certificate(mesh):
    local, _ = mesh
    own = NodeTLS(local.nodes["berlin"].home).client_context()
    assert _catalog_call(local, "berlin", "munich", own).status_code == 200


def test_a_signature_with_another_members_certificate_is_refused(mesh):
    local, _ = mesh
    berlins = NodeTLS(local.nodes["berlin"].home).client_context()
    response = _catalog_call(local, "hq", "munich", berlins)
    assert response.status_code == 403
    assert "certificate of 'berlin'" in response.json()["message"]


def test_a_node_call_without_a_certificate_is_refused(mesh):
    local, _ = mesh
    ca = NodeTLS(local.nodes["hq"].home).ca_pem()
    response = _catalog_call(local, "berlin", "munich", user_context(ca, "munich"))
    assert response.status_code == 403 and "no certificate" in response.json()["message"]


def test_a_certificate_from_another_ca_is_refused_by_http_and_flight(mesh):
    local, root = mesh
    with pytest.raises(httpx.HTTPError):
        _catalog_call(local, "berlin", "munich", _foreign_context(local, root, "berlin"))
    other = Authority.create(root / "foreign-flight", "mallory")
    key = new_private_key()
    ca = NodeTLS(local.nodes["hq"].home).ca_pem()
    client = flight.FlightClient(
        local.nodes["munich"].flight,
        tls_root_certs=ca,
        cert_chain=other.issue("berlin", public_key_pem(key), 24),
        private_key=private_key_pem(key),
        override_hostname=server_name("munich"),
    )
    ticket = b"SELECT 1"
    headers = signed_headers(
        open_home(local.nodes["berlin"].home), "munich", "DOGET", FRAGMENT_PATH, ticket
    )
    options = flight.FlightCallOptions(
        headers=[(k.encode(), v.encode()) for k, v in headers.items()]
    )
    with pytest.raises(flight.FlightError):
        client.do_get(flight.Ticket(ticket), options).read_all()
    client.close()


def test_a_server_with_the_wrong_name_or_ca_is_not_trusted(mesh):
    local, root = mesh
    own = NodeTLS(local.nodes["berlin"].home).client_context()
    headers = signed_headers(open_home(local.nodes["berlin"].home), "munich", "GET", CATALOG)
    with httpx.Client(verify=own, timeout=10) as client, pytest.raises(httpx.ConnectError):
        # munich's address, but asked to be hq: its certificate does not say so
        client.get(
            local.nodes["munich"].http + CATALOG,
            headers=headers,
            extensions={"sni_hostname": server_name("hq")},
        )
    stranger_ca = Authority.create(root / "stranger", "x").pem
    stranger = httpx.Client(verify=user_context(stranger_ca, None), timeout=10)
    with stranger, pytest.raises(httpx.ConnectError):
        stranger.get(local.nodes["munich"].http + "/health")


def test_revoking_a_node_shuts_it_out_everywhere(mesh):
    """Last in this module: berlin stays revoked."""
    local, _ = mesh
    assert {"berlin.orders", "munich.orders"} <= local.nodes["munich"].catalog()
    shoal("node", "revoke", "berlin", home=local.nodes["hq"].home)
    own = NodeTLS(local.nodes["berlin"].home).client_context()
    wait_until(
        lambda: _catalog_call(local, "berlin", "munich", own).status_code == 403,
        timeout=20,
        what="munich refusing berlin",
    )
    assert "revoked" in _catalog_call(local, "berlin", "munich", own).json()["message"]
    wait_until(
        lambda: "berlin.orders" not in local.nodes["munich"].catalog(),
        timeout=20,
        what="berlin's products gone from munich's catalog",
    )
    answer = local.nodes["munich"].call(
        "POST", "/api/v1/query?format=json", json={"sql": "SELECT DISTINCT _node FROM orders"}
    )
    assert answer.json().get("rows") == [["munich"]], answer.text
    # It cannot come back under that name, nor renew its certificate.
    again = shoal("invite", "berlin", home=local.nodes["hq"].home, check=False)
    assert again.returncode == 6 and "revoked" in again.stderr
    entries = audit.read(open_home(local.nodes["hq"].home), action="revocation")
    assert entries[-1]["detail"]["node"] == "berlin"
    bad = shoal("node", "revoke", "nobody", home=local.nodes["hq"].home, check=False)
    assert bad.returncode == 4
    not_hub = shoal("node", "revoke", "hq", home=local.nodes["munich"].home, check=False)
    assert not_hub.returncode == 6


def test_certificates_renew_themselves_and_the_mesh_keeps_answering(tmp_path):
    hours = 0.012  # 43 s: renewal after about 29 s
    settings = {name: {"tls_cert_hours": hours} for name in ("hq", "berlin")}
    with LocalMesh(tmp_path / "mesh") as local:
        local.start([("hq", "eu-de"), ("berlin", "eu-de")], settings=settings)
        pq.write_table(ORDERS, tmp_path / "orders.parquet")
        shoal(
            "publish", "orders", str(tmp_path / "orders.parquet"), home=local.nodes["berlin"].home
        )
        local.wait_for_catalog({"berlin.orders"})
        tls = NodeTLS(local.nodes["berlin"].home)
        first = tls.certificate().serial_number
        life = tls.expires() - tls.certificate().not_valid_before_utc - CERT_BACKDATE
        assert life.total_seconds() == pytest.approx(hours * 3600, abs=1)  # the hub's setting
        assert not tls.needs_renewal()
        wait_until(
            lambda: NodeTLS(local.nodes["berlin"].home).certificate().serial_number != first,
            timeout=90,
            interval=0.5,
            what="berlin's renewed certificate",
        )
        renewed = x509.load_pem_x509_certificate(tls.node_path.read_bytes())
        renewed.verify_directly_issued_by(
            x509.load_pem_x509_certificate(NodeTLS(local.nodes["hq"].home).ca_pem())
        )
        # Flight restarted with the new certificate; the coordinator reaches it again.
        sql = {"sql": "SELECT count(*) AS n FROM berlin.orders"}
        wait_until(
            lambda: (
                local.nodes["hq"].call("POST", "/api/v1/query?format=json", json=sql).status_code
                == 200
            ),
            timeout=30,
            what="a query over the renewed node",
        )
        answer = local.nodes["hq"].call("POST", "/api/v1/query?format=json", json=sql)
        assert answer.json()["rows"] == [[3]]
        entries = audit.read(open_home(local.nodes["hq"].home), action="certificate")
        renewals = [e for e in entries if e["who"] == "node:berlin"]
        assert renewals and all(e["detail"]["hours"] == hours for e in renewals)
        # Not in a loop: each renewal waits until a third of the new certificate's life
        # is left (a second may come while the test waits for the query).
        times = [entry_time(e) for e in renewals]
        least = hours * 3600 * (1 - RENEW_WHEN_LEFT) - 5
        assert all((b - a).total_seconds() >= least for a, b in itertools.pairwise(times))
