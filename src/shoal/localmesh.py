"""A mesh of real node processes on this machine, on free loopback ports.

Used by `shoal demo`, the federated benchmark and the multi-process tests: the first node is
initialised as the hub and served; every other node joins it with a real one-time token over
HTTP and is served in its own `shoal serve` process. Stopping sends SIGTERM and waits, so
each node shuts down the way an operator's Ctrl-C would.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

import httpx
import pyarrow.flight as flight
import yaml

from shoal.client import Mesh, connect
from shoal.config import open_home
from shoal.credentials import of_home
from shoal.errors import ShoalError
from shoal.mesh.invites import Invites
from shoal.mesh.tls import NodeTLS
from shoal.node import Node

__all__ = ["LocalMesh", "LocalNode", "wait_until"]

T = TypeVar("T")


def wait_until(
    check: Callable[[], T], *, timeout: float = 10.0, interval: float = 0.05, what: str = "it"
) -> T:
    """Poll `check` until it gives a truthy value; gives that value."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise ShoalError(f"timed out after {timeout:g} s waiting for {what} (last: {last!r})")


class LocalNode:
    """One `shoal serve` child process and its home."""

    def __init__(
        self, name: str, home: Path, *, bind: str = "127.0.0.1", prefix: Sequence[str] = ()
    ) -> None:
        """`bind` is the address both servers listen on (port 0: a free one). `prefix` runs
        the server through another program, e.g. `ip netns exec NS` to serve inside a network
        namespace; it must exec the command, since `start` knows the server by its pid."""
        self.name = name
        self.home = home
        self.bind = bind
        self.prefix = list(prefix)
        self.process: subprocess.Popen[bytes] | None = None
        self.http = ""
        self.flight = ""
        self._log: IO[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.home.parent / f"{self.name}.serve.log"

    def start(self, timeout: float = 60.0) -> LocalNode:
        """Serve the node on free ports of its bind address; returns once it answers /health."""
        run_file = self.home / "run" / "server.json"
        run_file.unlink(missing_ok=True)
        self._log = self.log_path.open("ab")
        listen = f"[{self.bind}]:0" if ":" in self.bind else f"{self.bind}:0"
        command = [*self.prefix, sys.executable, "-m", "shoal", "serve", "--home", str(self.home)]
        command += ["--http", listen, "--flight", listen]
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = self.log_path.read_text(errors="replace")
                raise ShoalError(f"node {self.name} exited at start:\n{log[-2000:]}")
            info = _read_json(run_file)
            if info and info.get("pid") == self.process.pid:
                self.http, self.flight = str(info["http"]), str(info["flight"])
                try:
                    with self.client() as client:
                        client.get("/health", timeout=5).raise_for_status()
                    return self
                except httpx.HTTPError:
                    pass
            time.sleep(0.05)
        self.kill()
        raise ShoalError(f"node {self.name} did not start within {timeout:g} s")

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Ask the node to stop and wait; gives its exit code (kills it after `timeout`)."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            # Its stacks say what it was waiting for (the server prints them on SIGUSR1).
            self.process.send_signal(signal.SIGUSR1)
            time.sleep(1.0)
            self.process.kill()
            self.process.wait()
            log = self.log_path.read_text(errors="replace")
            raise ShoalError(
                f"node {self.name} did not stop within {timeout:g} s; its log ends:\n" + log[-6000:]
            ) from None
        finally:
            self._close()

    def kill(self) -> None:
        """End the process at once, as a crash or power cut would."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait()
            self._close()

    def _close(self) -> None:
        self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def client(self, as_home: Path | None = None, *, sign: bool = True) -> httpx.Client:
        """An HTTP client for this node's control plane that signs every call as the node
        of `as_home` (default: this node itself, its owner; `sign=False`: no signature, the
        TLS certificate only) and checks this node's TLS certificate."""
        credentials = of_home(open_home(as_home or self.home), self.http)
        return _NamedClient(
            credentials.extensions(),
            base_url=self.http,
            verify=credentials.verify,
            auth=credentials.auth if sign else None,
            timeout=30,
        )

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request to this node's control plane as the node itself; the whole answer."""
        with self.client() as client:
            response = client.request(method, path, **kwargs)
            response.read()
        return response

    def get(self, path: str, **params: Any) -> Any:
        """GET a JSON answer from this node's control plane."""
        with self.client() as client:
            response = client.get(path, params=params)
        response.raise_for_status()
        return response.json()

    def flight_client(self, as_home: Path | None = None) -> flight.FlightClient:
        """A Flight client for this node's data plane, with the mutual TLS of the node of
        `as_home` (default: this node itself)."""
        options: dict[str, Any] = {}
        if self.flight.startswith("grpc+tls://"):
            options = NodeTLS(as_home or self.home).flight_client_options(self.name)
        return flight.FlightClient(self.flight, **options)

    def mesh(self) -> Mesh:
        """`shoal.connect` to this node as the node itself."""
        return connect(self.http, home=self.home)

    def catalog(self) -> set[str]:
        """The `owner.product` names in this node's catalog."""
        return {str(p["name"]) for p in self.get("/api/v1/products")}


class LocalMesh:
    """Several nodes on this machine, the first one the hub."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.nodes: dict[str, LocalNode] = {}

    def start(
        self,
        members: Sequence[tuple[str, str]],
        progress: Callable[[str], None] | None = None,
        settings: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> LocalMesh:
        """Create and serve `(name, region)` nodes: the first founds the mesh, the rest join.

        `settings` adds settings per node name before the node first starts (a node that
        restarts gets new ports, and a hub on new ports would lose its members).
        """
        say = progress or (lambda _: None)
        extra = settings or {}
        (hub_name, hub_region), *others = members
        self.root.mkdir(parents=True, exist_ok=True)
        hub_home = self.root / hub_name
        hub = Node.init(hub_home, hub_name, hub_region)
        hub.membership.found()
        _add_settings(hub_home, extra.get(hub_name))
        self.nodes[hub_name] = LocalNode(hub_name, hub_home).start()
        say(f"{hub_name} (hub) serving at {self.nodes[hub_name].http}")
        invites = Invites(hub.home, hub.membership)
        for name, region in others:
            token, _ = invites.issue(name, region, 600)
            home = self.root / name
            Node.join(home, self.nodes[hub_name].http, token)
            _add_settings(home, extra.get(name))
            self.nodes[name] = LocalNode(name, home).start()
            say(f"{name} joined and is serving at {self.nodes[name].http}")
        return self

    def wait_for_catalog(self, names: set[str], timeout: float = 30.0) -> None:
        """Wait until every running node's catalog lists all of `names`."""
        for node in self.nodes.values():
            if node.running():
                wait_until(
                    lambda node=node: names <= node.catalog(),  # type: ignore[misc]
                    timeout=timeout,
                    what=f"the catalog at {node.name}",
                )

    def stop(self) -> dict[str, int]:
        """Stop every node; gives each one's exit code."""
        codes = {}
        for name, node in reversed(self.nodes.items()):
            try:
                codes[name] = node.stop()
            except ShoalError:
                codes[name] = -1
        return codes

    def __enter__(self) -> LocalMesh:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _NamedClient(httpx.Client):
    """An httpx client that asks every request for the node's TLS server name."""

    def __init__(self, extensions: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._extensions = extensions

    def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        request.extensions = {**request.extensions, **self._extensions}
        return super().send(request, **kwargs)


def _add_settings(home: Path, values: Mapping[str, Any] | None) -> None:
    if values:
        path = home / "settings.yaml"
        path.write_text(path.read_text() + yaml.safe_dump(dict(values)))


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
