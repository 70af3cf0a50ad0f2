"""The control plane: a FastAPI app under `/api/v1`, with `/health` and `/metrics`.

Every failure answers with a JSON body `{"error", "message", "hint"}` and the status of its
`ShoalError` class; a malformed or oversized request gets a 4xx, never a 5xx or a hang.
Blocking work (SQL, publishing, file I/O) runs in worker threads so the event loop keeps
answering pings while a query runs.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import logging
import time
from collections.abc import Callable, Iterator
from importlib.metadata import version
from typing import Any

import pyarrow as pa
from fastapi import FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from shoal import audit
from shoal.errors import RefusedError, ShoalError, UsageError
from shoal.mesh.authority import Authority, tls_dir
from shoal.mesh.invites import Invites
from shoal.mesh.tls import NodeTLS
from shoal.node import Node
from shoal.policy import Principal
from shoal.products import Mode
from shoal.results import read_bounded
from shoal.server.auth import member_calling, principal_calling
from shoal.server.limits import BodyLimit
from shoal.server.metrics import Metrics
from shoal.server.refusals import RefusalLog, claimed_caller
from shoal.server.sync import news_digest

__all__ = ["ARROW_STREAM", "create_app"]

log = logging.getLogger("shoal.server")

__version__ = version("shoal")

ARROW_STREAM = "application/vnd.apache.arrow.stream"
MAX_JSON_BODY = 16 * 1024 * 1024
MAX_SQL_CHARS = 1024 * 1024
MAX_JSON_ROWS = 100_000
_JSON_HINT = "too many for JSON: ask for the Arrow stream (the default format) or add a LIMIT"


class QueryRequest(BaseModel):
    sql: str = Field(min_length=1, max_length=MAX_SQL_CHARS, description="One read-only SELECT")


class ExplainRequest(QueryRequest):
    analyze: bool = Field(
        default=False, description="Run the query and report rows, bytes and time per stage"
    )


# PEM is printable ASCII in lines; anything else is refused before it reaches a key parser.
PEM_TEXT = r"^[ -~\r\n]*$"


class JoinRequest(BaseModel):
    token: str = Field(min_length=1, max_length=8192)
    public_key: str = Field(min_length=1, max_length=128, description="raw Ed25519, base64")
    tls_public_key: str = Field(
        default="",
        max_length=4096,
        pattern=PEM_TEXT,
        description="P-256 public key (PEM) to certify for TLS",
    )


class CertificateRequest(BaseModel):
    tls_public_key: str = Field(
        min_length=1,
        max_length=4096,
        pattern=PEM_TEXT,
        description="P-256 public key (PEM) to certify for TLS",
    )


class _WholeFile(FileResponse):
    """A replica's file download in 1 MiB chunks: each chunk costs a thread hop and a
    write through h11 and TLS, and Starlette's 64 KiB made that per-chunk cost most of a
    copy's CPU time (bench/replication.py). Ranges still resume a cut download."""

    chunk_size = 1 << 20


class ErrorBody(BaseModel):
    error: str = Field(description="The ShoalError class, e.g. UsageError or LockdownError")
    message: str
    hint: str | None = None


# Every operation may fail with a JSON error body (the OpenAPI spec says so, for clients).
_ERRORS: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": ErrorBody, "description": "The request was refused"},
    "5XX": {"model": ErrorBody, "description": "The node could not answer"},
}


class Gossip(BaseModel):
    members: list[dict[str, Any]] = Field(default_factory=list, max_length=1000)
    entries: list[dict[str, Any]] = Field(default_factory=list, max_length=10_000)


def create_app(
    node: Node, metrics: Metrics, *, on_gossip: Callable[[], None] | None = None
) -> FastAPI:
    """Build the app for `node`; `on_gossip` is told when peers sent news (to wake sync)."""
    app = FastAPI(
        title=f"Shoal node {node.name}",
        version=__version__,
        description="Control plane of one Shoal node: catalog, membership and SQL.",
        responses=_ERRORS,
    )
    upload_limit = node.home.settings.max_upload_mb * 1024 * 1024
    app.add_middleware(
        BodyLimit,
        limit_for=lambda path: upload_limit if path.endswith("/versions") else MAX_JSON_BODY,
    )
    _install_error_handlers(app, RefusalLog(node.home))

    @app.middleware("http")
    async def count_requests(request: Request, call_next: Any) -> Any:
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        metrics.requests.labels(request.method, path, str(response.status_code)).inc()
        return response

    # -- health and metrics -------------------------------------------------------------
    @app.get("/health", tags=["operations"])
    def health() -> dict[str, Any]:
        answer: dict[str, Any] = {"status": "ok", "node": node.name, "time": time.time()}
        if node.membership.joined():
            answer["news"] = news_digest(node)
        return answer

    @app.get("/metrics", tags=["operations"], responses={200: {"content": {"text/plain": {}}}})
    def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # -- the node and the mesh ----------------------------------------------------------
    @app.get("/api/v1/node", tags=["mesh"])
    def about(request: Request) -> dict[str, Any]:
        principal_calling(node, request, b"")
        me = node.membership.member(node.name) if node.membership.joined() else None
        return {
            "name": node.name,
            "region": node.home.settings.region,
            "hub": node.membership.hub if me else None,
            "http": me.http if me else "",
            "flight": me.flight if me else "",
            "version": __version__,
        }

    @app.get("/api/v1/nodes", tags=["mesh"])
    def nodes(request: Request) -> list[dict[str, Any]]:
        principal_calling(node, request, b"")
        return node.members_view()

    @app.get(
        "/api/v1/mesh/ca",
        tags=["mesh"],
        responses={200: {"content": {"application/x-pem-file": {}}}},
    )
    def certificate_authority() -> Response:
        """The mesh CA certificate (public): a joining node checks it against its token."""
        return Response(NodeTLS(node.home.root).ca_pem(), media_type="application/x-pem-file")

    @app.post("/api/v1/mesh/certificate", tags=["mesh"])
    async def certificate(request: Request) -> dict[str, Any]:
        """On the hub: a new TLS certificate for a member's new key (renewal). Signed by
        the member's key; no client certificate needed, since the old one may have ended."""
        body = await request.body()
        caller = member_calling(node, request, body, certificate=False)
        try:
            asked = CertificateRequest.model_validate_json(body)
        except ValueError as exc:
            raise UsageError(f"malformed certificate request: {_first_line(exc)}") from exc
        issued = await run_in_threadpool(
            _certify, node, caller, asked.tls_public_key.encode("ascii")
        )
        return {"tls_certificate": issued.decode("ascii")}

    @app.post("/api/v1/mesh/join", tags=["mesh"])
    def join(request: JoinRequest) -> dict[str, Any]:
        try:
            public_key = base64.b64decode(request.public_key, validate=True)
        except ValueError as exc:  # binascii.Error, or text that is not ASCII
            raise UsageError("public_key must be base64") from exc
        admission = Invites(node.home, node.membership).redeem(
            request.token, public_key, request.tls_public_key.encode("ascii")
        )
        if on_gossip is not None:
            on_gossip()
        return {
            "hub": admission.hub,
            "hub_key": base64.b64encode(admission.hub_key).decode(),
            "certificate": admission.certificate.token,
            "members": admission.members,
            # Joining with a valid token admits a member, which hashes masked values alike.
            "mask_secret": node.membership.mask_secret(),
            "tls_certificate": admission.tls_certificate.decode("ascii"),
        }

    @app.get("/api/v1/mesh/catalog", tags=["mesh"])
    def catalog(
        request: Request, since: int = Query(0, ge=0), epoch: str = Query("", max_length=64)
    ) -> dict[str, Any]:
        member_calling(node, request)
        current_epoch, counter, entries = node.catalog.changes_since(since, epoch)
        return {
            "epoch": current_epoch,
            "counter": counter,
            "entries": [e.model_dump() for e in entries],
            "members": node.membership.records(),
        }

    @app.post("/api/v1/mesh/gossip", tags=["mesh"])
    async def gossip(request: Request) -> dict[str, Any]:
        body = await request.body()
        caller = member_calling(node, request, body)
        try:
            news = Gossip.model_validate_json(body)
        except ValueError as exc:
            raise UsageError(f"malformed gossip from {caller}: {_first_line(exc)}") from exc
        members = await run_in_threadpool(node.membership.merge, news.members)
        entries = await run_in_threadpool(node.catalog.merge, news.entries)
        if (members or entries) and on_gossip is not None:
            on_gossip()
        return {"members": len(members), "entries": len(entries)}

    # -- products -----------------------------------------------------------------------
    @app.get("/api/v1/products", tags=["products"])
    def products(request: Request, mesh: bool = True) -> list[dict[str, Any]]:
        principal_calling(node, request, b"")
        entries = node.mesh_products()
        if not mesh:
            entries = [e for e in entries if e.owner == node.name]
        return [e.summary() for e in entries]

    @app.get("/api/v1/products/{name}", tags=["products"])
    def describe(name: str, request: Request) -> list[dict[str, Any]]:
        principal_calling(node, request, b"")
        return node.describe_in_mesh(name)

    @app.post("/api/v1/products/{name}/versions", tags=["products"])
    async def publish(
        name: str, request: Request, mode: Mode = Mode.APPEND, key: str = ""
    ) -> dict[str, Any]:
        if request.headers.get("content-type", "").split(";")[0].strip() != ARROW_STREAM:
            raise UsageError(f"send the data as an Arrow IPC stream ({ARROW_STREAM})")
        body = await request.body()
        principal = principal_calling(node, request, body)
        if not principal.sees_everything_of(node.name):
            raise RefusedError(
                f"only the owner's people and admins publish {node.name}'s products; "
                f"you are {principal.name} ({principal.role})"
            )
        keys = [k for k in key.split(",") if k]
        result = await run_in_threadpool(_publish_arrow, node, name, body, mode, keys)
        return dict(result)

    # -- replication --------------------------------------------------------------------
    @app.get("/api/v1/replication/{owner}/{product}/log", tags=["mesh"])
    async def replication_log(
        owner: str, product: str, request: Request, since: int = Query(0, ge=0)
    ) -> dict[str, Any]:
        """A holder's signed entries after `since`, for a replica (members only)."""
        caller = member_calling(node, request)
        source = node.replication_source
        return await run_in_threadpool(source.log_since, caller, owner, product, since)

    @app.get("/api/v1/replication/{owner}/{product}/file", tags=["mesh"])
    async def replication_file(
        owner: str,
        product: str,
        request: Request,
        path: str = Query(..., min_length=1, max_length=1024),
    ) -> FileResponse:
        """One commit or data file the signed entries name (HTTP ranges resume it)."""
        caller = member_calling(node, request)
        source = node.replication_source
        target = await run_in_threadpool(source.file, caller, owner, product, path)
        return _WholeFile(target, media_type="application/octet-stream")

    # -- SQL ----------------------------------------------------------------------------
    @app.post("/api/v1/query", tags=["sql"], responses={200: {"content": {ARROW_STREAM: {}}}})
    async def query(
        request: QueryRequest,
        http_request: Request,
        format: str = Query("arrow", pattern="^(arrow|json)$"),
    ) -> Any:
        started = time.perf_counter()
        try:
            principal = principal_calling(node, http_request, await http_request.body())
            if format == "json":
                reader = await run_in_threadpool(
                    functools.partial(node.query, request.sql, principal=principal)
                )
                table = await run_in_threadpool(
                    read_bounded, reader, MAX_JSON_ROWS, hint=_JSON_HINT
                )
                payload = json.dumps(
                    {
                        "columns": table.column_names,
                        "rows": [list(r.values()) for r in table.to_pylist()],
                    },
                    default=str,
                )
                response: Any = Response(payload, media_type="application/json")
            else:
                first, reader = await run_in_threadpool(_start, node, request.sql, principal)
                response = StreamingResponse(_ipc_chunks(first, reader), media_type=ARROW_STREAM)
        except ShoalError:
            metrics.queries.labels("error").inc()
            raise
        metrics.queries.labels("ok").inc()
        metrics.query_seconds.observe(time.perf_counter() - started)
        return response

    @app.post("/api/v1/explain", tags=["sql"])
    async def explain(request: ExplainRequest, http_request: Request) -> dict[str, Any]:
        principal = principal_calling(node, http_request, await http_request.body())
        return await run_in_threadpool(_explain, node, request, principal)

    return app


def _certify(node: Node, caller: str, public_key_pem: bytes) -> bytes:
    hours = node.home.settings.tls_cert_hours
    issued = Authority.load(tls_dir(node.home)).issue(caller, public_key_pem, hours)
    audit.record(node.home, "certificate", f"node:{caller}", hours=hours)
    return issued


def _explain(node: Node, request: ExplainRequest, principal: Principal) -> dict[str, Any]:
    if request.analyze:
        return node.analyze(request.sql, principal).report()
    plan = node.plan(request.sql)
    return {"plan": plan.to_dict(), "text": plan.explain()}


def _publish_arrow(
    node: Node, name: str, body: bytes, mode: Mode, keys: list[str]
) -> dict[str, Any]:
    try:
        table = pa.ipc.open_stream(pa.py_buffer(body)).read_all()
    except (pa.ArrowInvalid, OSError) as exc:
        raise UsageError(f"the body is not a valid Arrow IPC stream: {exc}") from exc
    return node.publish_table(name, table, mode=mode, key=keys or None).to_dict()


def _ipc_chunks(first: pa.RecordBatch | None, reader: pa.RecordBatchReader) -> Iterator[bytes]:
    """The Arrow IPC stream, one chunk per batch (the first batch was read to catch errors)."""
    buffer = io.BytesIO()
    with pa.ipc.new_stream(buffer, reader.schema) as writer:
        if first is not None:
            writer.write_batch(first)
            yield _drain(buffer)
        for batch in reader:
            writer.write_batch(batch)
            yield _drain(buffer)
    yield _drain(buffer)


def _drain(buffer: io.BytesIO) -> bytes:
    data = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return data


def _start(
    node: Node, sql: str, principal: Principal
) -> tuple[pa.RecordBatch | None, pa.RecordBatchReader]:
    """Run the query up to its first batch, so errors become a proper answer, not a cut."""
    reader = node.query(sql, principal=principal)
    try:
        first = reader.read_next_batch()
    except StopIteration:
        first = None
    return first, reader


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().split("\n")[0]


def _install_error_handlers(app: FastAPI, refusals: RefusalLog | None = None) -> None:
    @app.exception_handler(ShoalError)
    async def shoal_error(request: Request, exc: ShoalError) -> JSONResponse:
        if isinstance(exc, RefusedError) and refusals is not None:
            who = claimed_caller(request.headers.get("authorization", ""))
            where = f"{request.method} {request.url.path}"
            await run_in_threadpool(refusals.record, who, where, exc.message)
        return JSONResponse(exc.to_dict(), status_code=exc.http_status)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        where = ".".join(str(p) for p in errors[0].get("loc", ())) if errors else "request"
        message = errors[0].get("msg", "invalid request") if errors else "invalid request"
        return JSONResponse(
            {"error": "UsageError", "message": f"{where}: {message}"}, status_code=422
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "NotFoundError" if exc.status_code == 404 else "UsageError"
        return JSONResponse(
            {"error": kind, "message": str(exc.detail)}, status_code=exc.status_code
        )

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error while answering a request")
        return JSONResponse(
            {"error": "ShoalError", "message": f"internal error: {type(exc).__name__}: {exc}"},
            status_code=500,
        )
