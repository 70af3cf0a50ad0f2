"""The data plane: an Arrow Flight server whose `DoGet` answers SQL.

Two kinds of ticket:

* a **query** — the ticket is the SQL text itself, or JSON `{"sql": "..."}` — runs as a
  federated query with this node as coordinator, for the user whose token the call carries
  (`authorization: Bearer ...`) or the member that signed it;
* a **fragment** — JSON `{"fragment": {"owner", "product", "sql", "version", "also"}}`
  (`also`: other products of the owner it reads, as `[name, version]` pairs) — is one node's part of
  a federated query, sent by a coordinator. It must carry the coordinator's signed request
  token; the node runs it over its own product in the locked-down engine.

A fragment's batches carry, as app metadata, the seconds this node has spent producing them
so far (`{"node_seconds": ...}`, measured around the engine only): the coordinator splits a
fragment's time into node execution and transfer with it (`shoal explain --analyze`).

Errors travel as Flight errors whose `extra_info` is the ShoalError's JSON, so the caller
raises the same error class with the same message.

With TLS on (the default), the server takes only mutual TLS: a client must show a
certificate of the mesh CA, so the data plane is for the mesh's own nodes; people and
tools ask over HTTPS (`POST /api/v1/query` gives the same Arrow stream).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.flight as flight

from shoal.errors import RefusedError, ShoalError, TokenError, UsageError
from shoal.mesh.peers import FRAGMENT_PATH, fragment_from_wire
from shoal.mesh.tls import NodeTLS
from shoal.mesh.tokens import read_request_token, request_caller
from shoal.mesh.users import principal_of
from shoal.mesh.wire import AUTH_SCHEME, error_to_bytes
from shoal.node import Node
from shoal.policy import Principal
from shoal.server.metrics import Metrics
from shoal.server.refusals import RefusalLog, claimed_caller

__all__ = ["FlightListener", "ShoalFlightServer"]

log = logging.getLogger("shoal.flight")

MAX_TICKET_BYTES = 1024 * 1024
MAX_PRODUCTS_PER_FRAGMENT = 64
MAX_INPUTS_PER_FRAGMENT = 8
_INPUT_ID = re.compile(r"__shoal_b[0-9]{1,6}")


class _Caller(flight.ServerMiddleware):  # type: ignore[misc]
    def __init__(self, authorization: str) -> None:
        self.authorization = authorization


class _CallerFactory(flight.ServerMiddlewareFactory):  # type: ignore[misc]
    """Keeps the call's authorization header for the handler to check."""

    def start_call(self, info: Any, headers: dict[str, list[str]]) -> _Caller:
        values = headers.get("authorization") or [""]
        return _Caller(str(values[0]))


class ShoalFlightServer(flight.FlightServerBase):  # type: ignore[misc]
    def __init__(
        self, node: Node, location: str, metrics: Metrics | None = None, **tls: Any
    ) -> None:
        """`tls`: `NodeTLS.flight_server_options()` (mutual TLS), or nothing (plain)."""
        super().__init__(location, middleware={"caller": _CallerFactory()}, **tls)
        self.node = node
        self.metrics = metrics
        self.refusals = RefusalLog(node.home)

    def do_get(self, context: Any, ticket: flight.Ticket) -> flight.FlightDataStream:
        try:
            return self._answer(context, ticket.ticket)
        except ShoalError as exc:
            if isinstance(exc, RefusedError):
                caller = context.get_middleware("caller")
                who = claimed_caller(caller.authorization if caller is not None else "")
                self.refusals.record(who, "flight DoGet", exc.message)
            raise _flight_error(exc) from exc
        except Exception as exc:
            log.exception("unexpected error in DoGet")
            raise _flight_error(ShoalError(f"internal error: {type(exc).__name__}: {exc}")) from exc

    def _answer(self, context: Any, raw: bytes) -> flight.FlightDataStream:
        if len(raw) > MAX_TICKET_BYTES:
            raise UsageError("the ticket is larger than 1 MiB")
        request = _parse_ticket(raw)
        if "fragment" not in request:
            principal = self._principal(context, raw)
            return flight.RecordBatchStream(self.node.query(request["sql"], principal=principal))
        fragment = request["fragment"]
        caller = self._check_caller(context, raw)
        # The user the coordinator acts for, checked here with the hub's key: no peer can
        # widen what this node serves by saying who asks.
        user = request["user"]
        principal = principal_of(user, self.node.membership) if user else Principal.of_node(caller)
        started = time.perf_counter()
        try:
            inputs = self.node.fetch_inputs(
                [fragment_from_wire(item) for item in fragment.get("inputs", [])], principal
            )
            reader = self.node.serve_fragment(
                fragment["owner"],
                fragment["product"],
                fragment["sql"],
                fragment.get("version"),
                [(name, v) for name, v in fragment.get("also", [])],
                inputs,
                principal,
            )
        except ShoalError:
            if self.metrics is not None:
                self.metrics.fragments.labels("error").inc()
            raise
        if self.metrics is not None:
            self.metrics.fragments.labels("ok").inc()
        opened = time.perf_counter() - started
        return flight.GeneratorStream(reader.schema, _timed_batches(reader, opened))

    def _principal(self, context: Any, ticket: bytes) -> Principal:
        """Who asks a SQL ticket: a user's bearer token, or a member's signed request."""
        caller_info = context.get_middleware("caller")
        header = caller_info.authorization if caller_info is not None else ""
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return principal_of(token.strip(), self.node.membership)
        caller = self._check_caller(context, ticket)
        return Principal.local(caller) if caller == self.node.name else Principal.of_node(caller)

    def _check_caller(self, context: Any, ticket: bytes) -> str:
        caller_info = context.get_middleware("caller")
        header = caller_info.authorization if caller_info is not None else ""
        scheme, _, token = header.partition(" ")
        if scheme != AUTH_SCHEME or not token:
            raise TokenError(
                "a ticket must carry a user's token (authorization: Bearer) or a node's "
                "signed request"
            )
        caller = request_caller(token)
        member = self.node.membership.members().get(caller)
        if member is None:
            raise TokenError(f"'{caller}' is not a member of this mesh")
        claims = read_request_token(
            token,
            member.public_key,
            audience=self.node.name,
            method="DOGET",
            path=FRAGMENT_PATH,
            body=ticket,
        )
        self.node.seen_requests.check(claims)
        return caller


class FlightListener:
    """The Flight server in its own thread; `restart` serves a renewed certificate on the
    same port (gRPC cannot swap a listening server's certificate)."""

    def __init__(
        self, node: Node, scheme: str, host: str, port: int, metrics: Metrics, tls: NodeTLS | None
    ) -> None:
        self._node, self._scheme, self._host = node, scheme, host
        self._metrics, self._tls = metrics, tls
        self.server = self._make(port)
        self.port = int(self.server.port)
        self._thread: threading.Thread | None = None

    def _make(self, port: int) -> ShoalFlightServer:
        return ShoalFlightServer(
            self._node,
            f"{self._scheme}://{self._host}:{port}",
            self._metrics,
            **(self._tls.flight_server_options() if self._tls is not None else {}),
        )

    def start(self) -> None:
        self._thread = threading.Thread(target=self.server.serve, name="flight", daemon=True)
        self._thread.start()

    def restart(self) -> None:
        """Stop taking calls (those running finish), then listen again with the current
        certificate; a coordinator that calls in the gap fails over or retries."""
        self.shutdown()
        self.server = self._make(self.port)
        self.start()

    def shutdown(self) -> None:
        self.server.shutdown()
        if self._thread is not None:
            self._thread.join(timeout=10)


def _timed_batches(
    reader: pa.RecordBatchReader, spent: float
) -> Iterator[tuple[pa.RecordBatch, pa.Buffer]]:
    """The fragment's batches, each with the engine time spent so far (`spent` opening it,
    then producing batches) as app metadata; an empty batch carries it when there are no
    rows."""
    sent = False
    while True:
        started = time.perf_counter()
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            break
        finally:
            spent += time.perf_counter() - started
        sent = True
        yield batch, pa.py_buffer(json.dumps({"node_seconds": spent}).encode())
    if not sent:
        empty = pa.RecordBatch.from_pylist([], schema=reader.schema)
        yield empty, pa.py_buffer(json.dumps({"node_seconds": spent}).encode())


def _parse_ticket(raw: bytes) -> dict[str, Any]:
    """A query or fragment request from a ticket; UsageError if it is neither."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError("the ticket is not UTF-8 text") from exc
    if not text.lstrip().startswith("{"):
        return {"sql": text}
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"the ticket is not valid JSON: {exc}") from exc
    try:  # a JSON escape can spell a lone surrogate, which no later step could encode
        json.dumps(data, ensure_ascii=False).encode()
    except UnicodeEncodeError as exc:
        raise UsageError("the ticket holds text that is not valid Unicode") from exc
    if isinstance(data, dict) and isinstance(data.get("sql"), str):
        return {"sql": data["sql"]}
    fragment = data.get("fragment") if isinstance(data, dict) else None
    inputs = fragment.get("inputs", []) if isinstance(fragment, dict) else None
    if (
        _is_fragment(fragment)
        and isinstance(inputs, list)
        and len(inputs) <= MAX_INPUTS_PER_FRAGMENT
        and all(_is_input(item) for item in inputs)
    ):
        user = data.get("user", "")
        if not isinstance(user, str):
            raise UsageError("the ticket's user must be a token (text)")
        return {"fragment": fragment, "user": user}
    raise UsageError('a ticket is SQL text, {"sql": ...} or a fragment from a coordinator')


def _is_fragment(fragment: Any) -> bool:
    if not isinstance(fragment, dict):
        return False
    also = fragment.get("also", [])
    return (
        all(isinstance(fragment.get(k), str) for k in ("owner", "product", "sql"))
        and _is_version(fragment.get("version"))
        and isinstance(also, list)
        and len(also) <= MAX_PRODUCTS_PER_FRAGMENT
        and all(
            isinstance(item, list)
            and len(item) == 2
            and isinstance(item[0], str)
            and _is_version(item[1])
            for item in also
        )
    )


def _is_input(item: Any) -> bool:
    """A fragment to fetch first: a plain one (inputs do not nest), with where to run it."""
    return (
        _is_fragment(item)
        and "inputs" not in item
        and isinstance(item.get("id"), str)
        and _INPUT_ID.fullmatch(item["id"]) is not None
        and _strings(item.get("holders"), minimum=1)
        and _strings(item.get("columns"), minimum=0)
    )


def _strings(value: Any, *, minimum: int) -> bool:
    return (
        isinstance(value, list)
        and minimum <= len(value) <= 4096
        and all(isinstance(v, str) for v in value)
    )


def _is_version(value: Any) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0)


def _flight_error(error: ShoalError) -> flight.FlightError:
    extra = error_to_bytes(error)
    if isinstance(error, RefusedError):
        return flight.FlightUnauthorizedError(error.message, extra_info=extra)
    return flight.FlightServerError(error.message, extra_info=extra)
