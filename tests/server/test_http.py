"""The control plane in process (ASGI, no sockets): every bad request gets a 4xx with a JSON
error body, never a 5xx; node-to-node endpoints need a valid signature."""

from __future__ import annotations

import base64
import io
import json

import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

from shoal import audit
from shoal.crypto import generate_key
from shoal.mesh.invites import Invites
from shoal.mesh.peers import signed_headers
from shoal.mesh.users import Users
from shoal.node import Node
from shoal.server import refusals as refusals_module
from shoal.server.http import ARROW_STREAM, create_app
from shoal.server.metrics import Metrics
from tests.signing import NodeSigner


@pytest.fixture
def hub(tmp_path, write_parquet) -> Node:
    node = Node.init(tmp_path / "hq", "hq", "eu-de")
    node.membership.found()
    node.publish("orders", str(write_parquet({"id": [1, 2, 3], "amount": [1.5, 2.5, 3.5]})))
    return node


@pytest.fixture
def client(hub) -> TestClient:
    app = create_app(hub, Metrics(hub))
    # As the node's own owner (a request signed with its key), like `--at` from its home.
    with TestClient(app, raise_server_exceptions=False) as c:
        c.auth = NodeSigner(hub.home, hub.name)
        yield c


@pytest.fixture
def bare(hub) -> TestClient:
    """A client that signs nothing: the tests set (or leave out) the authorization."""
    with TestClient(create_app(hub, Metrics(hub)), raise_server_exceptions=False) as c:
        yield c


def _assert_json_error(response, status: int, kind: str | None = None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert "message" in body and "error" in body
    if kind:
        assert body["error"] == kind
    return body


def test_health_metrics_openapi(client):
    assert client.get("/health").json()["node"] == "hq"
    metrics = client.get("/metrics")
    assert metrics.status_code == 200 and "shoal_peers" in metrics.text
    spec = client.get("/openapi.json").json()
    assert "/api/v1/query" in spec["paths"]


def test_health_news_moves_with_the_catalog_and_the_members(client, hub):
    """Peers pull a node's catalog only when the digest its /health carries moved, so every
    change a pull would bring must move it, and nothing else may."""
    first = client.get("/health").json()["news"]
    assert len(first) == 16 and client.get("/health").json()["news"] == first
    hub.publish_table("orders", pa.table({"id": [7], "amount": [1.5]}))
    hub.refresh_catalog()
    after_publish = client.get("/health").json()["news"]
    assert after_publish != first
    token, _ = Invites(hub.home, hub.membership).issue("berlin", "eu-de", 600)
    Invites(hub.home, hub.membership).redeem(token, generate_key().public_bytes)
    assert client.get("/health").json()["news"] not in (first, after_publish)


def test_unknown_route_and_method(client):
    _assert_json_error(client.get("/api/v1/nope"), 404, "NotFoundError")
    _assert_json_error(client.delete("/api/v1/products"), 405)


def test_malformed_json_bodies(client):
    _assert_json_error(
        client.post(
            "/api/v1/query", content=b"{not json", headers={"content-type": "application/json"}
        ),
        422,
        "UsageError",
    )
    _assert_json_error(client.post("/api/v1/query", json={"sql": ""}), 422)
    _assert_json_error(client.post("/api/v1/query", json={"sql": 42}), 422)
    _assert_json_error(client.post("/api/v1/query", json=[1, 2]), 422)
    _assert_json_error(client.post("/api/v1/query?format=xml", json={"sql": "SELECT 1"}), 422)
    _assert_json_error(client.post("/api/v1/mesh/join", json={"token": "x"}), 422)


def test_oversized_bodies_get_413(client):
    big = b"x" * (17 * 1024 * 1024)
    _assert_json_error(
        client.post("/api/v1/query", content=big, headers={"content-type": "application/json"}),
        413,
    )

    def chunks():
        for _ in range(20):
            yield b"y" * (1024 * 1024)

    # Chunked, with no declared length: cut off while it streams in.
    _assert_json_error(
        client.post(
            "/api/v1/mesh/gossip", content=chunks(), headers={"content-type": "application/json"}
        ),
        413,
    )


def test_gossip_needs_a_valid_signature(bare, hub):
    client = bare
    body = json.dumps({"entries": [], "members": []}).encode()
    _assert_json_error(client.post("/api/v1/mesh/gossip", content=body), 403, "TokenError")
    stranger = generate_key()
    token = "Shoal " + "x.y.z"
    _assert_json_error(
        client.post("/api/v1/mesh/gossip", content=body, headers={"authorization": token}), 403
    )
    # Signed by the hub for itself: a member, right call, accepted.
    headers = signed_headers(hub.home, "hq", "POST", "/api/v1/mesh/gossip", body)
    assert client.post("/api/v1/mesh/gossip", content=body, headers=headers).status_code == 200
    # The same signature over another body is refused.
    other = json.dumps({"entries": [], "members": [{}]}).encode()
    _assert_json_error(client.post("/api/v1/mesh/gossip", content=other, headers=headers), 403)
    del stranger


def test_join_over_http(client, hub):
    token, _ = Invites(hub.home, hub.membership).issue("berlin", "eu-de", 600)
    key = generate_key()
    body = {"token": token, "public_key": base64.b64encode(key.public_bytes).decode()}
    # A TLS key that is not PEM text is refused before the token is spent.
    for hostile in ("\x80\x00", "-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----"):
        refused = client.post("/api/v1/mesh/join", json={**body, "tls_public_key": hostile})
        assert refused.status_code in (400, 422), refused.text
    assert "berlin" not in hub.membership.members()
    answer = client.post("/api/v1/mesh/join", json=body)
    assert answer.status_code == 200
    assert answer.json()["hub"] == "hq"
    _assert_json_error(client.post("/api/v1/mesh/join", json=body), 403, "TokenError")
    _assert_json_error(
        client.post("/api/v1/mesh/join", json={"token": token, "public_key": "%%%"}), 400
    )


def test_products_and_describe(client):
    products = client.get("/api/v1/products").json()
    assert [p["name"] for p in products] == ["hq.orders"]
    detail = client.get("/api/v1/products/hq.orders").json()[0]
    assert [c["name"] for c in detail["columns"]] == ["id", "amount"]
    assert detail["checkpoint"].startswith("hq/orders\n")
    body = _assert_json_error(client.get("/api/v1/products/order"), 404, "NotFoundError")
    assert "orders" in body.get("hint", "")
    _assert_json_error(client.get("/api/v1/products/Bad%20Name"), 400, "UsageError")


def _ipc(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def test_publish_over_http(client, hub):
    data = _ipc(pa.table({"id": [4], "amount": [9.0]}))
    answer = client.post(
        "/api/v1/products/orders/versions", content=data, headers={"content-type": ARROW_STREAM}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["version"] == 2
    _assert_json_error(
        client.post(
            "/api/v1/products/orders/versions",
            content=data[:-20],
            headers={"content-type": ARROW_STREAM},
        ),
        400,
    )
    _assert_json_error(
        client.post(
            "/api/v1/products/orders/versions",
            content=b"garbage",
            headers={"content-type": ARROW_STREAM},
        ),
        400,
    )
    _assert_json_error(client.post("/api/v1/products/orders/versions", content=data), 400)
    wrong_type = _ipc(pa.table({"id": ["text"], "amount": [1.0]}))
    answer = client.post(
        "/api/v1/products/orders/versions",
        content=wrong_type,
        headers={"content-type": ARROW_STREAM},
    )
    assert 400 <= answer.status_code < 500
    assert hub.products.latest_version("orders") == 2


def test_json_results_are_bounded_and_arrow_streams(client):
    too_many = client.post("/api/v1/query?format=json", json={"sql": "SELECT * FROM range(100001)"})
    body = _assert_json_error(too_many, 400, "UsageError")
    assert "Arrow" in body["hint"]
    streamed = client.post("/api/v1/query", json={"sql": "SELECT * FROM range(100001)"})
    assert streamed.status_code == 200
    assert streamed.headers["content-type"] == ARROW_STREAM
    assert pa.ipc.open_stream(streamed.content).read_all().num_rows == 100001
    refused = client.post("/api/v1/query", json={"sql": "COPY (SELECT 1) TO 'x.csv'"})
    _assert_json_error(refused, 403, "LockdownError")
    unknown = client.post("/api/v1/query", json={"sql": "SELECT * FROM hq.ordrs"})
    assert "hq.orders" in _assert_json_error(unknown, 404, "NotFoundError")["hint"]


def test_explain_analyze_runs_the_query_and_reports_it(client):
    sql = "SELECT count(*) AS n, sum(amount) AS s FROM orders"
    plain = client.post("/api/v1/explain", json={"sql": sql})
    assert plain.status_code == 200 and "analysis" not in plain.json()
    response = client.post("/api/v1/explain", json={"sql": sql, "analyze": True})
    assert response.status_code == 200, response.text
    body = response.json()
    analysis = body["analysis"]
    assert analysis["result_rows"] == 1
    [run] = analysis["fragments"]
    assert run["node"] == "hq" and run["rows"] == 1 and run["cache"] == "miss"
    assert run["node_seconds"] is not None
    assert "analysis:" in body["text"] and "1 row," in body["text"]
    again = client.post("/api/v1/explain", json={"sql": sql, "analyze": True}).json()
    assert again["analysis"]["fragments"][0]["cache"] == "hit"
    metrics = client.get("/metrics").text
    assert 'shoal_fragment_cache_total{result="hit"} 1.0' in metrics
    assert 'shoal_fragment_cache_total{result="miss"} 1.0' in metrics
    assert 'shoal_query_rows_moved_total{node="hq"} 1.0' in metrics


def test_explain_analyze_refuses_bad_input(client):
    _assert_json_error(
        client.post("/api/v1/explain", json={"sql": "SELECT 1", "analyze": "x"}), 422
    )
    _assert_json_error(
        client.post("/api/v1/explain", json={"sql": "DROP TABLE orders", "analyze": True}), 403
    )
    _assert_json_error(
        client.post("/api/v1/explain", json={"sql": "SELECT nope FROM orders", "analyze": True}),
        400,
    )


def test_every_data_endpoint_refuses_a_caller_without_credentials(bare, hub):
    for method, path in [
        ("GET", "/api/v1/node"),
        ("GET", "/api/v1/nodes"),
        ("GET", "/api/v1/products"),
        ("GET", "/api/v1/products/orders"),
        ("GET", "/api/v1/mesh/catalog"),
        ("GET", "/api/v1/replication/hq/orders/log"),
        ("POST", "/api/v1/query"),
        ("POST", "/api/v1/explain"),
        ("POST", "/api/v1/mesh/certificate"),
    ]:
        body = {"sql": "SELECT 1"} if method == "POST" else None
        response = bare.request(method, path, json=body)
        _assert_json_error(response, 403, "TokenError")
    # What is open shows no data: health, metrics, the spec and the mesh's CA certificate.
    assert bare.get("/health").status_code == 200
    assert bare.get("/api/v1/mesh/ca").text.startswith("-----BEGIN CERTIFICATE-----")
    refused = audit.read(hub.home, action="refuse")
    assert {e["detail"]["at"] for e in refused} >= {"GET /api/v1/products", "POST /api/v1/query"}
    assert {e["who"] for e in refused} == {"anonymous"}


def test_only_the_owners_people_publish(bare, hub):
    table = pa.table({"id": [9], "amount": [9.5]})
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    analyst = Users(hub.home, hub.membership).add("ana", "analyst", {}, "", 600)
    response = bare.post(
        "/api/v1/products/orders/versions",
        content=sink.getvalue(),
        headers={"content-type": ARROW_STREAM, "authorization": f"Bearer {analyst}"},
    )
    body = _assert_json_error(response, 403, "RefusedError")
    assert "user:ana (analyst)" in body["message"]
    assert hub.describe("orders").version == 1  # nothing written


def test_a_flood_of_refusals_is_counted_not_written_one_by_one(hub, monkeypatch):
    now = [100.0]
    monkeypatch.setattr(refusals_module.time, "monotonic", lambda: now[0])
    log = refusals_module.RefusalLog(hub.home, per_second=3)
    for _ in range(10):
        log.record("anonymous", "GET /x", "no")
    now[0] += 1
    log.record("anonymous", "GET /x", "no")
    written = [e for e in audit.read(hub.home, action="refuse") if e["detail"]["at"] == "GET /x"]
    assert len(written) == 4
    assert written[-1]["detail"]["unrecorded_before"] == 7
