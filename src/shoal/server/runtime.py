"""`shoal serve`: one process runs the control plane, the data plane and the mesh sync.

Startup order matters for the people who run it: the home is locked (one server per home),
both listeners are bound (so a busy port fails before anything is announced), then the
node announces its endpoints and writes `<home>/run/server.json` with its real URLs (port
0 picks free ports; tests and `shoal demo` read the file). SIGINT and SIGTERM stop it
cleanly: listeners close, background work is cancelled, the run file is removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import threading
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
from shoal.node import Node
from shoal.server.flight import ShoalFlightServer
from shoal.server.http import create_app
from shoal.server.metrics import Metrics
from shoal.server.sync import MeshSync

__all__ = ["Listen", "parse_listen", "read_run_file", "run_file", "serve"]

log = logging.getLogger("shoal.server")

DEFAULT_HTTP = "127.0.0.1:7400"
DEFAULT_FLIGHT = "127.0.0.1:7401"
_ANY_ADDRESS = ("0.0.0.0", "::")  # noqa: S104 -- compared with, never bound by default


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
            raise UsageError(f"invalid {what} URL {url!r}: want e.g. http://shop-pc:7400")
    node = Node.open(home_root)
    with _serving_lock(home_root):
        node.membership.found()  # the first node of a mesh is its hub
        health = PeerHealth()
        node.health = health
        node.replicator.health = health
        # Copies serve again only once they caught up with what they missed while down.
        node.replicator.started = True
        node.keep_columns = True
        metrics = Metrics(node)
        sock = _bind(http_at)
        try:
            flight_server = ShoalFlightServer(
                node, f"grpc://{flight_at.host}:{flight_at.port}", metrics
            )
        except Exception as exc:
            sock.close()
            raise UsageError(f"cannot listen on --flight {flight}: {exc}") from exc
        http_port = sock.getsockname()[1]
        flight_host = _url_host(_advertised_host(advertise, flight_at.host))
        urls = {
            "http": advertise or f"http://{_url_host(http_at.host)}:{http_port}",
            "flight": advertise_flight or f"grpc://{flight_host}:{flight_server.port}",
        }
        if http_at.host in _ANY_ADDRESS and advertise is None:
            log.warning("listening on all addresses: pass --advertise with a reachable URL")
        node.membership.announce(urls["http"], urls["flight"])
        info = {"pid": os.getpid(), "node": node.name, **urls, "started": time.time()}
        run_path = run_file(home_root)
        run_path.parent.mkdir(exist_ok=True)
        atomic_write(run_path, json.dumps(info).encode())
        flight_thread = threading.Thread(target=flight_server.serve, name="flight", daemon=True)
        flight_thread.start()
        try:
            asyncio.run(_main(node, health, metrics, sock, info, on_ready))
        finally:
            run_path.unlink(missing_ok=True)
            flight_server.shutdown()
            node.fragment_client.close()
            sock.close()


async def _main(
    node: Node,
    health: PeerHealth,
    metrics: Metrics,
    sock: socket.socket,
    info: dict[str, Any],
    on_ready: Callable[[dict[str, Any]], None] | None,
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    sync = MeshSync(node, health)
    app = create_app(node, metrics, on_gossip=sync.wake)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = _Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    syncing = asyncio.create_task(sync.run())
    while not server.started and not serving.done():
        await asyncio.sleep(0.01)
    if on_ready is not None and not serving.done():
        on_ready(info)
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True
    syncing.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await syncing
    await serving
    stopping.cancel()


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
