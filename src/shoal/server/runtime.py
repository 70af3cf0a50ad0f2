"""`shoal serve`: one process runs the control plane, the data plane and the mesh sync.

Startup order matters for the people who run it: the home is locked (one server per home),
both listeners are bound (so a busy port fails before anything is announced), then the
node announces its endpoints and writes `<home>/run/server.json` with its real URLs (port
0 picks free ports; tests and `shoal demo` read the file). SIGINT and SIGTERM stop it
cleanly: listeners close, background work is cancelled, the run file is removed. SIGUSR1
prints every thread's stack to stderr (what is it doing?), and so does a stop that is still
running after `STUCK_STOP_AFTER` seconds (what is it waiting for?).
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import fcntl
import json
import logging
import os
import signal
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import uvicorn

from shoal.durable import atomic_write
from shoal.errors import ConflictError, UsageError
from shoal.mesh.health import PeerHealth
from shoal.mesh.tls import NodeTLS
from shoal.node import Node
from shoal.server.flight import FlightListener
from shoal.server.http import create_app
from shoal.server.metrics import Metrics
from shoal.server.peer import PeerAwareH11
from shoal.server.renewal import Renewer
from shoal.server.sync import MeshSync

__all__ = ["Listen", "parse_listen", "read_run_file", "run_file", "serve"]

log = logging.getLogger("shoal.server")

DEFAULT_HTTP = "127.0.0.1:7400"
DEFAULT_FLIGHT = "127.0.0.1:7401"
_ANY_ADDRESS = ("0.0.0.0", "::")  # noqa: S104 -- compared with, never bound by default
# A stop lets requests in flight finish for this long, then drops them: an operator's
# Ctrl-C must end the node even while a peer streams a large file from it (the peer resumes
# the download from another holder or later).
STOP_GRACE = 8  # whole seconds: uvicorn takes an int
STUCK_STOP_AFTER = 10.0


@dataclass(frozen=True)
class Listen:
    host: str
    port: int


def parse_listen(text: str, what: str) -> Listen:
    """`HOST:PORT` (port 0 picks a free one); a clear UsageError otherwise."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise UsageError(f"invalid {what} address {text!r}: want HOST:PORT, e.g. 127.0.0.1:7400")
    return Listen(host, int(port))


def run_file(home_root: Path) -> Path:
    return home_root / "run" / "server.json"


def read_run_file(home_root: Path) -> dict[str, Any] | None:
    """The URLs of the server running on this home, if one is running."""
    path = run_file(home_root)
    try:
        info = json.loads(path.read_text())
        os.kill(int(info["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return dict(info)


@contextlib.contextmanager
def _serving_lock(home_root: Path) -> Iterator[None]:
    locks = home_root / "locks"
    locks.mkdir(exist_ok=True)
    fd = os.open(locks / "serve.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            running = read_run_file(home_root)
            where = f" at {running['http']}" if running else ""
            raise ConflictError(f"a node is already serving from this home{where}") from exc
        yield
    finally:
        os.close(fd)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: `serve` owns SIGINT/SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def serve(
    home_root: Path,
    *,
    http: str = DEFAULT_HTTP,
    flight: str = DEFAULT_FLIGHT,
    advertise: str | None = None,
    advertise_flight: str | None = None,
    on_ready: Callable[[dict[str, Any]], None] | None = None,
) -> None:
    """Run the node at `home_root` until SIGINT or SIGTERM."""
    http_at = parse_listen(http, "--http")
    flight_at = parse_listen(flight, "--flight")
    for url, what in ((advertise, "--advertise"), (advertise_flight, "--advertise-flight")):
        if url is not None and not urlsplit(url).netloc:
            raise UsageError(f"invalid {what} URL {url!r}: want e.g. https://shop-pc:7400")
    node = Node.open(home_root)
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    tls_on = node.home.settings.tls
    schemes = ("https", "grpc+tls") if tls_on else ("http", "grpc")
    for url, what, scheme in (
        (advertise, "--advertise", schemes[0]),
        (advertise_flight, "--advertise-flight", schemes[1]),
    ):
        if url is not None and urlsplit(url).scheme != scheme:
            raise UsageError(
                f"{what} {url!r} must be a {scheme}:// URL: this node serves "
                + ("TLS" if tls_on else "without TLS (setting tls: false)")
            )
    with _serving_lock(home_root):
        node.membership.found()  # the first node of a mesh is its hub
        tls = NodeTLS(home_root)
        if tls_on:
            tls.require()
        health = PeerHealth()
        node.health = health
        node.replicator.health = health
        # Copies serve again only once they caught up with what they missed while down.
        node.replicator.started = True
        node.keep_columns = True
        metrics = Metrics(node)
        sock = _bind(http_at)
        try:
            flight_listener = FlightListener(
                node,
                schemes[1],
                _url_host(flight_at.host),
                flight_at.port,
                metrics,
                tls if tls_on else None,
            )
        except Exception as exc:
            sock.close()
            raise UsageError(f"cannot listen on --flight {flight}: {exc}") from exc
        http_port = sock.getsockname()[1]
        flight_host = _url_host(_advertised_host(advertise, flight_at.host))
        urls = {
            "http": advertise or f"{schemes[0]}://{_url_host(http_at.host)}:{http_port}",
            "flight": advertise_flight or f"{schemes[1]}://{flight_host}:{flight_listener.port}",
        }
        if http_at.host in _ANY_ADDRESS and advertise is None:
            log.warning("listening on all addresses: pass --advertise with a reachable URL")
        node.membership.announce(urls["http"], urls["flight"])
        info = {"pid": os.getpid(), "node": node.name, **urls, "started": time.time()}
        run_path = run_file(home_root)
        run_path.parent.mkdir(exist_ok=True)
        atomic_write(run_path, json.dumps(info).encode())
        flight_listener.start()
        serving = _Serving(node, health, metrics, sock, info, flight_listener)
        if tls_on:
            serving.tls_context = tls.server_context()
        try:
            asyncio.run(_main(serving, on_ready))
        finally:
            run_path.unlink(missing_ok=True)
            flight_listener.shutdown()
            node.fragment_client.close()
            sock.close()
            faulthandler.cancel_dump_traceback_later()


@dataclass
class _Serving:
    """What one `serve` runs: the node, its listeners and what they share."""

    node: Node
    health: PeerHealth
    metrics: Metrics
    sock: socket.socket
    info: dict[str, Any]
    flight: FlightListener
    tls_context: ssl.SSLContext | None = None

    def renewed(self) -> None:
        """Serve the renewed certificate: new HTTP handshakes at once, Flight restarted,
        and this node's own calls on new connections."""
        tls = NodeTLS(self.node.home.root)
        if self.tls_context is not None:
            tls.reload(self.tls_context)
            self.flight.restart()
        self.node.fragment_client.close()


async def _main(serving: _Serving, on_ready: Callable[[dict[str, Any]], None] | None) -> None:
    node = serving.node
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    sync = MeshSync(node, serving.health)
    app = create_app(node, serving.metrics, on_gossip=sync.wake)
    tls: dict[str, Any] = {}
    if serving.tls_context is not None:
        context = serving.tls_context
        tls = {"http": PeerAwareH11, "ssl_context_factory": lambda _config, _default: context}
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=STOP_GRACE,
        **tls,
    )
    server = _Server(config)

    def renewed() -> None:
        serving.renewed()
        sync.renewed()

    tasks = {
        asyncio.create_task(sync.run()),
        asyncio.create_task(Renewer(node, renewed).run()),
    }
    running = asyncio.create_task(server.serve(sockets=[serving.sock]))
    while not server.started and not running.done():
        await asyncio.sleep(0.01)
    if on_ready is not None and not running.done():
        on_ready(serving.info)
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
    log.info("stopping")
    faulthandler.dump_traceback_later(STUCK_STOP_AFTER)
    watchdog = asyncio.create_task(_report_stuck_stop())
    closer = asyncio.create_task(_close_late_connections(server))
    server.should_exit = True
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await running
    stopping.cancel()
    watchdog.cancel()
    closer.cancel()


async def _close_late_connections(server: uvicorn.Server) -> None:
    """Tell every connection to close once its response is sent, again and again while the
    stop runs. uvicorn tells only those it has when the stop begins; one whose TLS handshake
    was still running joins just after, and a peer that pings every second kept it (and
    the stop, which waits for all connections to close) alive for ever."""
    while True:
        for connection in list(server.server_state.connections):
            transport = getattr(connection, "transport", None)
            if transport is not None and not transport.is_closing():
                connection.shutdown()
        await asyncio.sleep(0.05)


async def _report_stuck_stop() -> None:
    """Log what every task still waits on when a stop takes too long (the thread stacks
    faulthandler prints show only the event loop waiting)."""
    await asyncio.sleep(STUCK_STOP_AFTER)
    me = asyncio.current_task()
    for task in asyncio.all_tasks():
        if task is not me:
            log.warning(
                "still stopping after %g s: %s waits in %s",
                STUCK_STOP_AFTER,
                task.get_name(),
                " > ".join(_awaiting(task.get_coro())),
            )


def _awaiting(awaitable: Any) -> list[str]:
    """Where a suspended coroutine is, down the chain of what it awaits (a task's own stack
    stops at its outermost coroutine)."""
    places = []
    while awaitable is not None:
        frame = getattr(awaitable, "cr_frame", None) or getattr(awaitable, "gi_frame", None)
        if frame is None:
            places.append(repr(awaitable)[:200])
            break
        places.append(f"{frame.f_code.co_qualname} ({frame.f_code.co_filename}:{frame.f_lineno})")
        awaitable = getattr(awaitable, "cr_await", None) or getattr(awaitable, "gi_yieldfrom", None)
    return places


def _bind(listen: Listen) -> socket.socket:
    family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Connections accepted from this socket inherit TCP_NODELAY. Without it, uvicorn's
    # response (headers and body in two writes) waits for the client's delayed ACK on a
    # kept-alive connection: about 40 ms added to every request after the first.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((listen.host, listen.port))
    except OSError as exc:
        sock.close()
        raise UsageError(
            f"cannot listen on --http {listen.host}:{listen.port}: {exc.strerror}"
        ) from exc
    sock.listen(128)
    sock.setblocking(False)
    return sock


def _advertised_host(advertise: str | None, fallback: str) -> str:
    if advertise:
        host = urlsplit(advertise).hostname
        if host:
            return host
    return fallback


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
