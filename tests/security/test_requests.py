"""What a request must carry to be served: a fragment ticket is signed by a member, for this
node, this call and exactly this ticket, and not long ago; and no request body is larger
than its endpoint takes (413 with a JSON error, never a 5xx, never read to the end)."""

from __future__ import annotations

import asyncio
import json
import time
import types

import pytest
from fastapi.testclient import TestClient

from shoal.crypto import generate_key
from shoal.errors import UsageError
from shoal.mesh import tokens
from shoal.mesh.peers import FRAGMENT_PATH
from shoal.mesh.wire import AUTH_SCHEME
from shoal.server.flight import MAX_TICKET_BYTES, _parse_ticket
from shoal.server.http import ARROW_STREAM, MAX_JSON_BODY, create_app
from shoal.server.metrics import Metrics

SAFE = "SELECT count(*) AS n FROM orders"


def served_only(test):
    """Marks a test that talks to real node processes."""
    for mark in (pytest.mark.multiprocess, pytest.mark.slow, pytest.mark.timeout(300)):
        test = mark(test)
    return test


def _refused(served, ticket: bytes, headers, kind: str, words: str) -> None:
    error = served.refusal(ticket, headers)
    assert error["error"] == kind, error
    assert words in error["message"], error


@served_only
@pytest.mark.parametrize("header", [None, "", "Shoal", "Shoal not.a.token", "Bearer abc"])
def test_fragment_without_a_valid_signature_is_refused(served, header):
    ticket = served.ticket(SAFE)
    headers = None if header is None else {"authorization": header}
    error = served.refusal(ticket, headers)
    assert error["error"] == "TokenError", error


@served_only
def test_altered_ticket_with_the_old_signature_is_refused(served):
    """A captured signature replays only the exact ticket it was made for."""
    ticket = served.ticket(SAFE)
    headers = served.signed(ticket)
    assert served.do_get(ticket, headers).to_pylist() == [{"n": 3}]
    for altered in (
        served.ticket("SELECT * FROM orders"),
        served.ticket(SAFE, version=0),
        served.ticket(SAFE + " "),
        ticket.replace(b'"version": null', b'"version": null, "also": []'),
        json.dumps({"fragment": json.loads(ticket)["fragment"], "user": "x"}).encode(),
    ):
        assert altered != ticket
        _refused(served, altered, headers, "TokenError", "does not match its signature")


@served_only
def test_a_replayed_ticket_is_refused(served):
    """A recorded ticket with its signature works once: played again, it is refused."""
    ticket = served.ticket(SAFE)
    headers = served.signed(ticket)
    assert served.do_get(ticket, headers).to_pylist() == [{"n": 3}]
    _refused(served, ticket, headers, "TokenError", "already used")


@served_only
@pytest.mark.parametrize(
    ("call", "words"),
    [
        ({"audience": "hq"}, "not valid"),  # made for another node
        ({"method": "POST"}, "another call"),
        ({"path": "/api/v1/mesh/gossip"}, "another call"),
    ],
)
def test_signature_for_another_call_is_refused(served, call, words):
    ticket = served.ticket(SAFE)
    _refused(served, ticket, served.signed(ticket, **call), "TokenError", words)


@served_only
def test_strangers_and_forgers_are_refused(served):
    ticket = served.ticket(SAFE)
    stranger = generate_key()
    as_stranger = tokens.sign_request(stranger, "mallory", "berlin", "DOGET", FRAGMENT_PATH, ticket)
    _refused(
        served, ticket, {"authorization": f"{AUTH_SCHEME} {as_stranger}"}, "TokenError", "member"
    )
    as_hq = tokens.sign_request(stranger, "hq", "berlin", "DOGET", FRAGMENT_PATH, ticket)
    _refused(
        served, ticket, {"authorization": f"{AUTH_SCHEME} {as_hq}"}, "TokenError", "expected key"
    )


@served_only
def test_expired_request_is_refused(served, monkeypatch):
    ticket = served.ticket(SAFE)
    past = time.time() - 10 * 60  # well beyond the token's minute and the clock leeway
    monkeypatch.setattr(tokens, "time", types.SimpleNamespace(time=lambda: past))
    headers = served.signed(ticket)
    monkeypatch.undo()
    _refused(served, ticket, headers, "TokenError", "expired")


@served_only
def test_oversized_ticket_is_refused_before_anything_else(served):
    ticket = served.ticket("SELECT 1 /*" + "x" * MAX_TICKET_BYTES + "*/")
    for headers in (None, served.signed(ticket)):
        _refused(served, ticket, headers, "UsageError", "larger than 1 MiB")


@pytest.mark.parametrize(
    "raw",
    [
        b'{"sql": "SELECT \'\\ud800\'"}',
        b'{"fragment": {"owner": "berlin", "product": "orders", "sql": "SELECT \'\\udfff\'"}}',
    ],
)
def test_ticket_spelling_a_lone_surrogate_is_refused(raw):
    """Valid JSON, but no text: refused as the ticket is read, before any step that would
    encode it (the serving node hashes a fragment's SQL for its audit log)."""
    with pytest.raises(UsageError, match="not valid Unicode"):
        _parse_ticket(raw)


# -- request bodies -----------------------------------------------------------------------
UPLOAD_LIMIT = 1024 * 1024  # max_upload_mb: 1 for these tests
POSTS = {
    "/api/v1/mesh/join": MAX_JSON_BODY,
    "/api/v1/mesh/gossip": MAX_JSON_BODY,
    "/api/v1/products/orders/versions": UPLOAD_LIMIT,
    "/api/v1/query": MAX_JSON_BODY,
    "/api/v1/explain": MAX_JSON_BODY,
}


@pytest.fixture
def small_upload_app(lab, monkeypatch):
    monkeypatch.setattr(lab.node.home.settings, "max_upload_mb", 1)
    return create_app(lab.node, Metrics(lab.node))


def _assert_413(response) -> None:
    assert response.status_code == 413, response.text[:200]
    body = response.json()
    assert body["error"] == "UsageError" and "larger than" in body["message"]


@pytest.mark.parametrize(("path", "limit"), POSTS.items())
def test_oversized_bodies_get_413(lab, small_upload_app, path, limit):
    versions = lab.node.products.latest_version("orders")
    with TestClient(small_upload_app, raise_server_exceptions=False) as client:
        declared = client.post(
            path, content=b"{" + b" " * limit + b"}", headers={"content-type": "application/json"}
        )
        _assert_413(declared)

        def chunks():  # no declared length: cut off while it streams in
            sent = 0
            while sent <= limit:
                yield b" " * 262_144
                sent += 262_144

        kind = ARROW_STREAM if path.endswith("/versions") else "application/json"
        _assert_413(client.post(path, content=chunks(), headers={"content-type": kind}))
    assert lab.node.products.latest_version("orders") == versions


@pytest.mark.parametrize("path", list(POSTS))
def test_a_declared_oversized_body_is_never_read(small_upload_app, path):
    """A terabyte announced in Content-Length is refused from the headers alone."""
    sent: list[dict] = []
    reads = 0

    async def receive() -> dict:
        nonlocal reads
        reads += 1
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"1" + b"0" * 12)],
        "client": ("127.0.0.1", 9),
        "server": ("testserver", 80),
    }
    asyncio.run(small_upload_app(scope, receive, send))
    assert sent[0]["status"] == 413
    assert json.loads(sent[1]["body"])["error"] == "UsageError"
    assert reads == 0


@served_only
@pytest.mark.parametrize("path", ["/api/v1/query", "/api/v1/mesh/gossip"])
def test_a_served_node_cuts_an_endless_body_off(served, path):
    """Over a real socket: a chunked body that never ends gets its 413, not a hang."""

    def endless():
        while True:
            yield b" " * 1_048_576

    # Unsigned: signing would read the endless body first; the limit cuts in before any check.
    with served.berlin.client(sign=False) as client:
        response = client.post(
            path, content=endless(), headers={"content-type": "application/json"}, timeout=30
        )
    _assert_413(response)
    assert served.berlin.get("/health")["status"] == "ok"
