"""Real node processes on loopback: joining, catalog sync, health, a node going down, and
federated SQL through the HTTP API, the CLI and Arrow Flight."""

from __future__ import annotations

import json
import signal
import socket
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.flight as flight
import pyarrow.parquet as pq
import pytest

from shoal.config import open_home
from shoal.mesh.peers import FRAGMENT_PATH, signed_headers
from shoal.mesh.tls import NodeTLS, server_name
from shoal.server.runtime import STOP_GRACE

from .processes import ServedNode, build_mesh, stop_all, wait_until
from .processes import shoal as run_shoal

pytestmark = [pytest.mark.multiprocess, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    root = tmp_path_factory.mktemp("mesh")
    nodes = build_mesh(root, ["hq", "berlin", "munich"])
    data = root / "data"
    data.mkdir()
    for store, base in (("berlin", 0), ("munich", 1000)):
        path = data / f"{store}.parquet"
        pq.write_table(
            pa.table(
                {
                    "order_id": pa.array(range(base, base + 50), pa.int64()),
                    "amount": pa.array([float(i % 7) + 0.5 for i in range(50)]),
                    "city": [store.title()] * 50,
                }
            ),
            path,
        )
        run_shoal("publish", "orders", str(path), home=nodes[store].home)
    catalogue = data / "catalogue.parquet"
    pq.write_table(pa.table({"sku": ["a", "b"], "name": ["Äpfel", "Brot"]}), catalogue)
    run_shoal("publish", "catalogue", str(catalogue), home=nodes["hq"].home)
    yield nodes, data
    stop_all(nodes)


def _catalog_keys(node: ServedNode) -> set[str]:
    return node.catalog()


def test_every_node_learns_every_product_and_member(mesh):
    nodes, _ = mesh
    want = {"berlin.orders", "munich.orders", "hq.catalogue"}
    for node in nodes.values():
        wait_until(lambda node=node: want <= _catalog_keys(node), what=f"catalog at {node.name}")
        members = {m["name"]: m for m in node.get("/api/v1/nodes")}
        assert set(members) == {"hq", "berlin", "munich"}
        wait_until(
            lambda node=node: all(m["state"] in ("up", "self") for m in node.get("/api/v1/nodes")),
            what=f"all peers up at {node.name}",
        )
    hub = nodes["hq"].get("/api/v1/node")
    assert hub["hub"] == "hq"


def test_new_version_reaches_every_catalog_within_two_seconds(mesh):
    nodes, data = mesh
    wait_until(lambda: "berlin.orders" in _catalog_keys(nodes["munich"]), what="first sync")
    before = {n: _version(node, "berlin.orders") for n, node in nodes.items()}
    # A CLI publish on the home of the running node: the server sees it and tells peers.
    run_shoal("publish", "orders", str(data / "berlin.parquet"), home=nodes["berlin"].home)
    for name, node in nodes.items():
        wait_until(
            lambda node=node, name=name: _version(node, "berlin.orders") > before[name],
            timeout=2.5,  # the 2 s on loopback, plus the CLI's own exit
            interval=0.02,
            what=f"new version at {name}",
        )


def _version(node: ServedNode, name: str) -> int:
    for product in node.get("/api/v1/products"):
        if product["name"] == name:
            return int(product["version"])
    return -1


def test_federated_sql_from_any_node(mesh):
    nodes, _ = mesh
    wait_until(lambda: {"berlin.orders", "munich.orders"} <= _catalog_keys(nodes["hq"]))
    sql = "SELECT _node, count(*) AS n FROM orders WHERE amount > 3 GROUP BY _node ORDER BY _node"
    answers = []
    for node in nodes.values():
        with node.mesh() as client:
            answers.append(client.sql(sql).rows())
    assert answers[0] == answers[1] == answers[2]
    assert [row[0] for row in answers[0]] == ["berlin", "munich"]
    # JSON for small results, and the CLI with --at
    response = nodes["munich"].call("POST", "/api/v1/query?format=json", json={"sql": sql})
    assert response.status_code == 200
    assert response.json()["columns"] == ["_node", "n"]
    out = run_shoal(
        "sql", sql, "--at", nodes["hq"].http, "--home", str(nodes["hq"].home), "--format", "json"
    ).stdout
    assert [row["_node"] for row in json.loads(out)] == ["berlin", "munich"]


def test_flight_doget_with_sql_ticket(mesh):
    """Flight takes SQL tickets from members over mutual TLS, signed like any call."""
    nodes, _ = mesh
    wait_until(lambda: "hq.catalogue" in _catalog_keys(nodes["berlin"]))
    hq_home = open_home(nodes["hq"].home)
    client = nodes["berlin"].flight_client(as_home=nodes["hq"].home)

    def signed(ticket: bytes) -> flight.FlightCallOptions:
        headers = signed_headers(hq_home, "berlin", "DOGET", FRAGMENT_PATH, ticket)
        pairs = [(k.encode(), v.encode()) for k, v in headers.items()]
        return flight.FlightCallOptions(headers=pairs)

    sql = b"SELECT name FROM hq.catalogue ORDER BY sku"
    table = client.do_get(flight.Ticket(sql), signed(sql)).read_all()
    assert table.column("name").to_pylist() == ["Äpfel", "Brot"]
    with pytest.raises(flight.FlightError, match="signed request"):
        client.do_get(flight.Ticket(sql)).read_all()  # no signature, no token
    copy = b"COPY (SELECT 1) TO 'x.csv'"
    with pytest.raises(flight.FlightError, match=r"not allowed|only one"):
        client.do_get(flight.Ticket(copy), signed(copy)).read_all()
    # A fragment without its coordinator's signature is refused.
    forged = json.dumps(
        {"fragment": {"owner": "berlin", "product": "orders", "sql": "SELECT 1"}}
    ).encode()
    with pytest.raises(flight.FlightError, match="signed"):
        client.do_get(flight.Ticket(forged)).read_all()
    client.close()
    # Without a mesh certificate, the data plane does not even answer.
    stranger = flight.FlightClient(nodes["berlin"].flight, disable_server_verification=True)
    with pytest.raises(flight.FlightError):
        stranger.do_get(flight.Ticket(sql), signed(sql)).read_all()
    stranger.close()


def test_explain_names_fragments_per_node(mesh):
    nodes, _ = mesh
    wait_until(lambda: {"berlin.orders", "munich.orders"} <= _catalog_keys(nodes["hq"]))
    out = run_shoal(
        "explain",
        "SELECT order_id FROM orders WHERE amount > 5",
        "--at",
        nodes["hq"].http,
        "--home",
        str(nodes["hq"].home),
    ).stdout
    assert "berlin" in out and "munich" in out and "amount" in out


def test_explain_analyze_shows_what_moved_and_where_the_time_went(mesh):
    nodes, _ = mesh
    wait_until(lambda: {"berlin.orders", "munich.orders"} <= _catalog_keys(nodes["hq"]))
    sql = "SELECT city, count(*) AS n, sum(amount) AS s FROM orders GROUP BY city"

    def analyze() -> dict:
        out = run_shoal(
            "explain",
            sql,
            "--analyze",
            "--json",
            "--at",
            nodes["hq"].http,
            "--home",
            str(nodes["hq"].home),
        ).stdout
        return json.loads(out)

    first = analyze()
    analysis = first["analysis"]
    runs = {run["fragment"]: run for run in analysis["fragments"]}
    assert {f["node"] for f in first["fragments"]} == {"berlin", "munich"}
    for fragment in first["fragments"]:
        run = runs[fragment["id"]]
        assert fragment["aggregate"], "the grouping is pushed to the nodes"
        assert run["node"] == fragment["node"]
        assert run["rows"] == 1  # one city per store: at most groups x nodes rows move
        assert run["bytes"] > 0
        # Timings may hit the cache if another test asked first; a miss is timed at the
        # node, which reports its own engine time over Flight.
        if run["cache"] == "miss":
            assert run["node_seconds"] is not None
            assert 0 <= run["node_seconds"] <= run["seconds"]
    assert analysis["rows_moved"] == 2 and analysis["result_rows"] == 2
    stages = analysis["stages"]
    assert stages["planning_seconds"] > 0 and stages["merge_seconds"] > 0
    assert stages["total_seconds"] >= stages["fetch_seconds"]
    # Asked again, the same versions are answered from the coordinator's exact cache.
    again = analyze()["analysis"]
    assert {run["cache"] for run in again["fragments"]} == {"hit"}
    assert again["rows_moved"] == 2
    text = run_shoal(
        "explain", sql, "--analyze", "--at", nodes["hq"].http, "--home", str(nodes["hq"].home)
    ).stdout
    assert "analysis:" in text and "cache hit" in text and "planning" in text
    # The same figures, as Prometheus metrics of the coordinator.
    metrics = nodes["hq"].call("GET", "/metrics").text
    assert 'shoal_fragment_cache_total{result="hit"}' in metrics
    assert 'shoal_query_stage_seconds_count{stage="planning"}' in metrics
    moved = [
        line
        for line in metrics.splitlines()
        if line.startswith("shoal_query_rows_moved_total{") and 'node="berlin"' in line
    ]
    assert moved and float(moved[0].split()[-1]) >= 1


def test_a_join_of_one_nodes_products_runs_at_that_node(mesh):
    nodes, data = mesh
    prices = data / "prices.parquet"
    pq.write_table(pa.table({"sku": ["a", "b"], "price": [2.5, 4.0]}), prices)
    run_shoal("publish", "prices", str(prices), home=nodes["hq"].home)
    wait_until(lambda: "hq.prices" in _catalog_keys(nodes["berlin"]), what="prices at berlin")
    sql = (
        "SELECT c.name, p.price FROM hq.catalogue c JOIN hq.prices p USING (sku) "
        "ORDER BY p.price DESC"
    )
    plan = json.loads(
        run_shoal(
            "explain",
            sql,
            "--json",
            "--at",
            nodes["berlin"].http,
            "--home",
            str(nodes["berlin"].home),
        ).stdout
    )
    [fragment] = plan["fragments"]
    assert fragment["node"] == "hq" and fragment["pushed"].startswith("the whole statement")
    assert {fragment["product"], *(a["product"] for a in fragment["also"])} == {
        "catalogue",
        "prices",
    }
    with nodes["berlin"].mesh() as client:
        assert client.sql(sql).rows() == [("Brot", 4.0), ("Äpfel", 2.5)]


def test_a_broadcast_join_over_flight(mesh):
    """The stores fetch hq's small product themselves and send grouped joined rows."""
    nodes, data = mesh
    cities = data / "cities.parquet"
    pq.write_table(pa.table({"city": ["Berlin", "Munich"], "region": ["north", "south"]}), cities)
    run_shoal("publish", "cities", str(cities), home=nodes["hq"].home)
    want = {"hq.cities", "berlin.orders", "munich.orders"}
    wait_until(lambda: want <= _catalog_keys(nodes["munich"]), what="cities at munich")
    sql = (
        "SELECT c.region, count(*) AS n, sum(o.amount) AS s FROM orders o "
        "JOIN hq.cities c USING (city) GROUP BY c.region ORDER BY c.region"
    )
    out = run_shoal(
        "explain",
        sql,
        "--analyze",
        "--json",
        "--at",
        nodes["munich"].http,
        "--home",
        str(nodes["munich"].home),
    ).stdout
    plan = json.loads(out)
    assert {f["node"] for f in plan["fragments"]} == {"berlin", "munich"}
    for fragment in plan["fragments"]:
        assert fragment["aggregate"] and [i["product"] for i in fragment["inputs"]] == ["cities"]
    assert plan["analysis"]["rows_moved"] <= 2  # one group per store
    with nodes["munich"].mesh() as client:
        rows = client.sql(sql).rows()
        # Another test may have published berlin's orders again: ask each store directly.
        per_store = [
            ("north", *client.sql("SELECT count(*), sum(amount) FROM berlin.orders").rows()[0]),
            ("south", *client.sql("SELECT count(*), sum(amount) FROM munich.orders").rows()[0]),
        ]
    assert rows == per_store and rows[1] == ("south", 50, sum(i % 7 + 0.5 for i in range(50)))


def test_a_node_going_down(mesh, tmp_path):
    nodes, _ = mesh
    munich = nodes["munich"]
    wait_until(lambda: "munich.orders" in _catalog_keys(nodes["hq"]))
    munich.kill()
    try:

        def state_at_hq():
            rows = {r["name"]: r for r in nodes["hq"].get("/api/v1/nodes")}
            return rows["munich"]["state"]

        wait_until(lambda: state_at_hq() == "down", timeout=15, what="munich down at hq")
        # The catalog keeps working without the node ...
        assert "munich.orders" in _catalog_keys(nodes["berlin"])
        # ... queries that need it fail naming the node and product ...
        response = nodes["hq"].call(
            "POST", "/api/v1/query", json={"sql": "SELECT count(*) FROM munich.orders"}
        )
        assert response.status_code == 503
        assert "munich" in response.json()["message"]
        # ... and those that do not still answer.
        response = nodes["hq"].call(
            "POST",
            "/api/v1/query?format=json",
            json={"sql": "SELECT count(*) AS n FROM berlin.orders"},
        )
        assert response.status_code == 200
    finally:
        munich.start()
    for name in ("hq", "berlin"):  # every peer must see it again before the next test
        wait_until(
            lambda name=name: (
                {r["name"]: r["state"] for r in nodes[name].get("/api/v1/nodes")}["munich"] == "up"
            ),
            timeout=15,
            what=f"munich up again at {name}",
        )


def test_hub_down_mesh_keeps_answering(mesh):
    nodes, _ = mesh
    hub = nodes["hq"]
    hub.stop()
    try:
        with nodes["berlin"].mesh() as client:
            result = client.sql("SELECT count(*) AS n FROM munich.orders")
        assert result.rows()[0][0] >= 50
        assert "hq.catalogue" in _catalog_keys(nodes["munich"])
    finally:
        hub.start()


def test_join_refuses_used_forged_and_expired_tokens(mesh, tmp_path):
    nodes, _ = mesh
    hub = nodes["hq"]
    token = run_shoal("invite", "hamburg", home=hub.home).stdout.strip().splitlines()[-1]
    run_shoal("join", hub.http, token, home=tmp_path / "hamburg")
    used = run_shoal("join", hub.http, token, home=tmp_path / "hamburg2", check=False)
    assert used.returncode == 6 and "already been used" in used.stderr
    assert not (tmp_path / "hamburg2").exists()
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    bad = run_shoal("join", hub.http, forged, home=tmp_path / "x", check=False)
    assert bad.returncode == 6
    garbage = run_shoal("join", hub.http, "not-a-token", home=tmp_path / "y", check=False)
    assert garbage.returncode == 6
    short = run_shoal("invite", "cologne", "--expires", "0s", home=hub.home, check=False)
    assert short.returncode == 2


def test_sigterm_and_sigint_stop_cleanly(tmp_path):
    node = ServedNode("solo", tmp_path / "solo")
    run_shoal("init", "--name", "solo", home=node.home)
    for sig in (signal.SIGTERM, signal.SIGINT):
        node.start()
        assert (node.home / "run" / "server.json").exists()
        assert node.stop(sig) == 0
        assert not (node.home / "run" / "server.json").exists()
    second = ServedNode("solo", node.home)
    node.start()
    try:
        clash = run_shoal(
            "serve", "--http", "127.0.0.1:0", "--flight", "127.0.0.1:0", home=node.home, check=False
        )
        assert clash.returncode == 5 and "already serving" in clash.stderr
    finally:
        node.stop()
    del second


def test_a_connection_that_joins_during_a_stop_is_closed_after_its_answer(tmp_path):
    """A peer's connection accepted just before SIGTERM finishes its TLS handshake after the
    stop began. It gets its answer and the server hangs up at once, so the stop does not
    wait for a peer that would keep the connection alive (a CI run waited 20 s). Without
    that, the hang-up would come only when the stop's grace period ran out."""
    node = ServedNode("solo", tmp_path / "solo")
    run_shoal("init", "--name", "solo", home=node.home)
    node.start()
    address = urlsplit(node.http)
    raw = socket.create_connection((address.hostname, address.port), timeout=10)
    try:
        node.process.send_signal(signal.SIGTERM)
        wait_until(lambda: _refused(address), what="the stop to close the listener")
        context = NodeTLS(node.home).client_context()
        raw.settimeout(STOP_GRACE / 2)
        with context.wrap_socket(raw, server_hostname=server_name("solo")) as tls:
            tls.sendall(b"GET /health HTTP/1.1\r\nhost: solo\r\n\r\n")
            answer = b""
            while chunk := tls.recv(65536):
                answer += chunk
        head = answer.split(b"\r\n\r\n", 1)[0].lower()
        assert head.startswith(b"http/1.1 200"), answer[:200]
        assert node.stop() == 0
    finally:
        raw.close()
        node.kill()


def _refused(address) -> bool:
    """Whether a new connection is refused: the server closed its listener, in the same
    step as it told the connections it had to close."""
    try:
        socket.create_connection((address.hostname, address.port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def test_a_node_that_hangs_fails_the_query_after_the_timeout(tmp_path):
    """A frozen process (SIGSTOP: accepts connections, never answers) is not 'down' yet;
    the query waits `query_timeout` and fails naming the node and product."""
    from shoal.localmesh import LocalMesh

    with LocalMesh(tmp_path / "mesh") as local:
        local.start([("hq", "eu-de"), ("berlin", "eu-de")])
        orders = tmp_path / "orders.parquet"
        pq.write_table(pa.table({"order_id": [1, 2, 3]}), orders)
        from shoal.node import Node

        Node.open(local.root / "berlin").publish("orders", str(orders))
        local.wait_for_catalog({"berlin.orders"})
        # A short timeout at the coordinator (settings are read when it starts) and slow
        # pings, so the frozen node is still 'up' or 'suspect' when the query runs.
        hq = local.nodes["hq"]
        hq.stop()
        settings = hq.home / "settings.yaml"
        settings.write_text(settings.read_text() + "query_timeout: 2.0\nping_interval: 30.0\n")
        hq.start()
        berlin = local.nodes["berlin"]
        berlin.process.send_signal(signal.SIGSTOP)
        try:
            response = hq.call(
                "POST",
                "/api/v1/query",
                json={"sql": "SELECT count(*) FROM berlin.orders"},
                timeout=30,
            )
        finally:
            berlin.process.send_signal(signal.SIGCONT)
        assert response.status_code == 503, response.text
        message = response.json()["message"]
        assert "berlin" in message and "berlin.orders" in message and "2 s" in message


def test_a_repeated_query_moves_no_data(tmp_path):
    """The coordinator answers a repeat from its exact cache: it works even while the node
    holding the data is frozen, and a new version is fetched fresh."""
    from shoal.localmesh import LocalMesh
    from shoal.node import Node

    with LocalMesh(tmp_path / "mesh") as local:
        local.start([("hq", "eu-de"), ("berlin", "eu-de")])
        orders = tmp_path / "orders.parquet"
        pq.write_table(pa.table({"order_id": [1, 2, 3], "amount": [1.0, 2.0, 3.0]}), orders)
        Node.open(local.root / "berlin").publish("orders", str(orders))
        local.wait_for_catalog({"berlin.orders"})
        hq, berlin = local.nodes["hq"], local.nodes["berlin"]
        sql = {"sql": "SELECT sum(amount) AS s FROM berlin.orders"}
        first = hq.call("POST", "/api/v1/query?format=json", json=sql, timeout=30)
        assert first.json()["rows"] == [[6.0]]
        berlin.process.send_signal(signal.SIGSTOP)
        try:
            again = hq.call("POST", "/api/v1/query?format=json", json=sql, timeout=10)
        finally:
            berlin.process.send_signal(signal.SIGCONT)
        assert again.status_code == 200 and again.json()["rows"] == [[6.0]]
        Node.open(local.root / "berlin").publish("orders", str(orders))
        wait_until(
            lambda: (
                hq.call("POST", "/api/v1/query?format=json", json=sql).json()["rows"] == [[12.0]]
            ),
            timeout=10,
            what="the new version at hq",
        )
