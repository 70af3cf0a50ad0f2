"""The control plane in process (ASGI, no sockets): every bad request gets a 4xx with a JSON
error body, never a 5xx; node-to-node endpoints need a valid signature."""

from __future__ import annotations

import base64
import io
import json

import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

from shoal.crypto import generate_key
from shoal.mesh.invites import Invites
from shoal.mesh.peers import signed_headers
from shoal.node import Node
from shoal.server.http import ARROW_STREAM, create_app
from shoal.server.metrics import Metrics


@pytest.fixture
def hub(tmp_path, write_parquet) -> Node:
    node = Node.init(tmp_path / "hq", "hq", "eu-de")
    node.membership.found()
    node.publish("orders", str(write_parquet({"id": [1, 2, 3], "amount": [1.5, 2.5, 3.5]})))
    return node


@pytest.fixture
def client(hub) -> TestClient:
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


def test_gossip_needs_a_valid_signature(client, hub):
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
