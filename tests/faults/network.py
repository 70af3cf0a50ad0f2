"""A network fault lab for multi-process tests: each host in its own network namespace.

    switch namespace:  bridge br0 ─ port p<i> ══ veth ══ eth0 in host <i>'s namespace
                                 └─ port po   ══ veth ══ eth0 in the observer's namespace

Everything lives in namespaces made for one lab, so the machine's own network is never
touched and parallel labs never meet. The observer is where the test itself stands (see
`NetLab.observer`); faults never target it, so it sees what every other host sees.

Faults, each a real change to the network:

* `cut`/`heal`: the host's port leaves/rejoins the bridge. Its link stays up (as when a
  switch or a firewall drops traffic), so senders wait for timeouts instead of getting errors.
* `degrade`/`restore`: loss and delay on every frame the host *sends*, as `tc netem` on its
  eth0 would do; a round trip with the host is lost with probability `loss` and takes
  `delay_ms` longer. `tc netem` when the kernel has it; otherwise loss by nftables
  `numgen random` in the switch (when `nft` is installed) and delay (and loss, without nft) by
  a userspace wire: a process in the switch namespace that carries the host's frames between
  two veths over AF_PACKET sockets, dropping and holding them. `NetLab.mechanisms` says which.

Without network namespaces (no root, no `ip`), `cut`/`heal` stop and continue the host's
processes (SIGSTOP/SIGCONT) and `degrade` raises `UnsupportedFaultError`.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import functools
import heapq
import os
import random
import re
import secrets
import select
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shoal.localmesh import LocalNode

__all__ = ["LabError", "NetLab", "UnsupportedFaultError", "build_mesh"]

# Where `ip netns add` puts its namespace files (iproute2's NETNS_RUN_DIR).
NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
SIOCETHTOOL, ETHTOOL_STXCSUM = 0x8946, 0x17
ETH_P_ALL, PACKET_OUTGOING = 0x0003, 4
NFT_TABLE = "shoal_lab"
OBSERVER = "observer"
MECHANISMS = ("netem", "nft", "wire")


class LabError(RuntimeError):
    """The lab could not set up or change the network."""


class UnsupportedFaultError(LabError):
    """This machine cannot make the asked fault (tests skip on it)."""


@dataclass
class _Host:
    name: str
    index: int
    ip: str
    netns: str | None
    port: str  # this host's switch-side veth, in the bridge while the host is connected
    cut: bool = False
    loss: float = 0.0
    delay_ms: float = 0.0
    wire: subprocess.Popen[bytes] | None = None
    members: list[Any] = field(default_factory=list)  # LocalNode, Popen or pid, for SIGSTOP

    @property
    def wire_port(self) -> str:
        return f"b{self.index}"  # the wire's veth end in the bridge, while the wire runs

    @property
    def bridge_port(self) -> str:
        return self.wire_port if self.wire is not None else self.port


class NetLab:
    """Hosts on a private switch; cut, heal, degrade and restore them. Use as a context.

    `mechanisms` limits (and orders) what `degrade` may use: "netem", "nft", "wire".
    `namespaces=False` forces the fallback without namespaces. `report` gets one line per
    setup and fault (default: print, which pytest shows with -s or on failure).
    Not thread-safe: drive one lab from one thread.
    """

    def __init__(
        self,
        hosts: Sequence[str],
        *,
        mechanisms: Sequence[str] = MECHANISMS,
        namespaces: bool = True,
        report: Callable[[str], None] | None = None,
    ) -> None:
        if len(set(hosts)) != len(hosts) or not 1 <= len(hosts) <= 200 or OBSERVER in hosts:
            raise ValueError(f"want 1-200 distinct host names other than {OBSERVER!r}")
        if unknown := set(mechanisms) - set(MECHANISMS):
            raise ValueError(f"unknown mechanisms {sorted(unknown)}; known: {MECHANISMS}")
        self._names = list(hosts)
        self._allowed = tuple(mechanisms)
        self._want_namespaces = namespaces
        self._report = report or (lambda line: print(f"netlab: {line}", flush=True))
        self.log: list[str] = []  # every line reported, for tests to check
        # pid in the names lets `_sweep` tell leftovers of a killed run from a live lab's.
        self._base = f"shoal-{os.getpid()}-{secrets.token_hex(2)}"
        self.subnet = f"10.231.{secrets.randbelow(256)}.0/24"
        self._hosts: dict[str, _Host] = {}
        self._switch: str | None = None
        self._processes: list[subprocess.Popen[bytes]] = []
        self._nodes: list[LocalNode] = []
        self._netem = False
        self._nft = False
        self.isolated = False
        self.mechanisms: dict[str, str] = {}

    # -- setting up and tearing down ----------------------------------------------------
    def __enter__(self) -> NetLab:
        try:
            self._start()
        except BaseException:
            self._stop()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        # Cleanup trouble is raised only when it would not hide the test's own failure.
        self._stop(raise_errors=exc_type is None)

    def _start(self) -> None:
        reason = "namespaces=False" if not self._want_namespaces else self._try_namespaces()
        if reason:
            self._fallback(reason)
            return
        self.isolated = True
        self._netem = "netem" in self._allowed and self._probe_netem()
        self._nft = not self._netem and "nft" in self._allowed and self._probe_nft()
        wire = "userspace wire (AF_PACKET frame relay in the switch namespace)"
        if "wire" not in self._allowed:
            wire = "unavailable (the wire is not allowed)"
        netem = "tc netem on the host's eth0"
        self.mechanisms = {
            "cut": "bridge port detached in the switch namespace (link stays up)",
            "loss": netem if self._netem else "nftables numgen random" if self._nft else wire,
            "delay": netem if self._netem else wire,
        }
        self._say(f"hosts {', '.join(self._names)} on {self.subnet}; {self.describe()}")

    def _try_namespaces(self) -> str:
        """Builds the switch and the hosts; gives why it could not, or ""."""
        _sweep()
        try:
            _ip("netns", "add", f"{self._base}-switch")
        except LabError as exc:
            return str(exc)
        self._switch = f"{self._base}-switch"
        try:
            _ip("-n", self._switch, "link", "add", "br0", "type", "bridge")
            _ip("-n", self._switch, "link", "set", "br0", "up")
            net = self.subnet.rsplit(".", 1)[0]
            for index, name in enumerate([*self._names, OBSERVER]):
                last = 254 if name == OBSERVER else index + 1
                safe = re.sub(r"[^a-z0-9_-]", "", name.lower())[:20]
                netns = f"{self._base}-{index}-{safe}"
                host = _Host(name, index, f"{net}.{last}", netns, f"p{index}")
                self._hosts[name] = host
                self._plug_in(host)
        except (LabError, OSError) as exc:
            # Namespaces without veth or bridges (a trimmed kernel) are no use either.
            self._delete_namespaces([])
            return str(exc)
        return ""

    def _plug_in(self, host: _Host) -> None:
        assert host.netns is not None and self._switch is not None
        _ip("netns", "add", host.netns)
        sw = ("-n", self._switch)
        veth = ["type", "veth", "peer", "name", "eth0", "netns", host.netns]
        _ip(*sw, "link", "add", host.port, *veth)
        _ip(*sw, "link", "set", host.port, "master", "br0", "up")
        _ip("-n", host.netns, "addr", "add", f"{host.ip}/24", "dev", "eth0")
        _ip("-n", host.netns, "link", "set", "eth0", "up")
        _ip("-n", host.netns, "link", "set", "lo", "up")
        # veth leaves TCP/UDP checksums to "the hardware" and passes 64 KiB TSO frames on;
        # the wire's AF_PACKET sockets would then forward frames with unfinished checksums
        # (the receiver drops them) and frames larger than the MTU (send fails). Turning the
        # checksum offload off also turns TSO off, so every frame leaves finished and small.
        with _in_netns(host.netns):
            _ethtool(b"eth0", ETHTOOL_STXCSUM, 0)

    def _fallback(self, reason: str) -> None:
        self.isolated = False
        for index, name in enumerate([*self._names, OBSERVER]):
            self._hosts[name] = _Host(name, index, "127.0.0.1", None, "")
        self.mechanisms = {
            "cut": "SIGSTOP/SIGCONT of the host's processes (no network namespaces)",
            "loss": "unavailable (no network namespaces)",
            "delay": "unavailable (no network namespaces)",
        }
        self._say(f"no network namespaces ({reason}); {self.describe()}")

    def _stop(self, raise_errors: bool = False) -> None:
        """Undoes everything, even while a test fails or Ctrl-C arrives."""
        errors: list[str] = []
        with _interrupts_deferred():
            for host in self._hosts.values():
                if host.cut and not self.isolated:
                    _step(errors, self._signal, host, signal.SIGCONT)
            for node in self._nodes:
                _step(errors, _stop_node, node)
            for process in self._processes:
                _step(errors, _end, process)
            for host in self._hosts.values():
                if host.wire is not None:
                    _step(errors, _end, host.wire)
            self._delete_namespaces(errors)
        if errors:
            message = "cleaning up the lab failed:\n" + "\n".join(errors)
            if raise_errors:
                raise LabError(message)
            self._say(message)

    def _delete_namespaces(self, errors: list[str]) -> None:
        for netns in [h.netns for h in self._hosts.values()] + [self._switch]:
            if netns is not None:
                _step(errors, _delete_netns, netns)
        self._hosts.clear()
        self._switch = None

    def _say(self, line: str) -> None:
        self.log.append(line)
        self._report(line)

    # -- what tests use -----------------------------------------------------------------
    def describe(self) -> str:
        """One line naming the mechanism of each fault."""
        return "; ".join(f"{fault}: {how}" for fault, how in self.mechanisms.items())

    @property
    def namespaces(self) -> set[str]:
        """The lab's namespace names (empty without namespaces)."""
        hosts = {h.netns for h in self._hosts.values() if h.netns}
        return hosts | ({self._switch} if self._switch else set())

    def ip(self, host: str) -> str:
        """The address to bind on `host` (127.0.0.1 without namespaces)."""
        return self._host(host).ip

    def prefix(self, host: str) -> list[str]:
        """The command prefix that runs a program on `host` (it execs, keeping the pid)."""
        netns = self._host(host).netns
        return ["ip", "netns", "exec", netns] if netns else []

    def run(
        self, host: str, command: Sequence[str], **kwargs: Any
    ) -> subprocess.CompletedProcess[Any]:
        """Run `command` on `host` to its end (`subprocess.run` keywords)."""
        return subprocess.run([*self.prefix(host), *command], **kwargs)

    def popen(self, host: str, command: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start `command` on `host`; the lab ends it on exit and stops it on a fallback cut."""
        process = subprocess.Popen([*self.prefix(host), *command], **kwargs)
        self._processes.append(process)
        self.attach(host, process)
        return process

    def attach(self, host: str, process: LocalNode | subprocess.Popen[Any] | int) -> None:
        """Count `process` as part of `host`, for the fallback's SIGSTOP/SIGCONT."""
        self._host(host).members.append(process)

    def node(self, host: str, home: Path) -> LocalNode:
        """A Shoal node named `host`, served there; `start` and `get` go through the
        observer, and the lab stops it on exit."""
        node = _lab_node_class()(self, host, home)
        self._nodes.append(node)
        self.attach(host, node)
        return node

    @contextlib.contextmanager
    def inside(self, host: str) -> Iterator[None]:
        """Sockets this thread makes in the block belong to `host`'s network."""
        netns = self._host(host).netns
        if netns is None:
            yield
            return
        with _in_netns(netns):
            yield

    def observer(self) -> contextlib.AbstractContextManager[None]:
        """Sockets made in the block stand on the switch, where no fault is ever put."""
        return self.inside(OBSERVER)

    # -- faults -------------------------------------------------------------------------
    def cut(self, host: str) -> None:
        """Partition `host` from every other host and the observer."""
        h = self._faultable(host)
        if not self.isolated:
            self._signal(h, signal.SIGSTOP)
        else:
            self._switch_ip("link", "set", h.bridge_port, "nomaster")
        h.cut = True
        self._say(f"cut {host}: {self.mechanisms['cut']}")

    def heal(self, host: str) -> None:
        """Undo `cut`."""
        h = self._faultable(host)
        if not self.isolated:
            self._signal(h, signal.SIGCONT)
        else:
            self._switch_ip("link", "set", h.bridge_port, "master", "br0")
        h.cut = False
        self._say(f"healed {host}")

    def degrade(self, host: str, *, loss: float = 0.0, delay_ms: float = 0.0) -> None:
        """Loses `loss` (0-1) of the frames `host` sends and holds each `delay_ms` longer.

        Replaces any earlier degrade of `host`.
        """
        h = self._faultable(host)
        if not 0.0 <= loss <= 1.0 or delay_ms < 0:
            raise ValueError(f"want 0 <= loss <= 1 and delay_ms >= 0, got {loss}, {delay_ms}")
        if not self.isolated:
            raise UnsupportedFaultError("loss and delay need network namespaces")
        self.restore(host, quiet=True)
        if self._netem:
            self._netem_apply(h, loss, delay_ms)
            used = "tc netem"
        else:
            # nftables drops in the kernel, so the wire runs only for what nft cannot do.
            wire_loss = 0.0 if self._nft else loss
            if delay_ms > 0 or wire_loss > 0:
                if "wire" not in self._allowed:
                    raise UnsupportedFaultError(f"{host}: no mechanism; {self.describe()}")
                self._start_wire(h, wire_loss, delay_ms)
            h.loss = loss
            if self._nft and loss > 0:
                self._nft_apply()
            parts = [f"loss by {'nftables' if self._nft else 'the wire'}"] if loss else []
            used = ", ".join(parts + (["delay by the wire"] if delay_ms else [])) or "nothing"
        h.loss, h.delay_ms = loss, delay_ms
        self._say(f"degraded {host} (loss {loss:.0%}, delay {delay_ms:g} ms): {used}")

    def restore(self, host: str, *, quiet: bool = False) -> None:
        """Undo `degrade`."""
        h = self._faultable(host)
        if not self.isolated:
            return
        if self._netem and (h.loss or h.delay_ms):
            _run(["tc", "-n", h.netns or "", "qdisc", "del", "dev", "eth0", "root"])
        if h.wire is not None:
            self._stop_wire(h)
        had_loss, h.loss, h.delay_ms = h.loss, 0.0, 0.0
        if self._nft and had_loss:
            self._nft_apply()
        if not quiet:
            self._say(f"restored {host}")

    # -- mechanisms ---------------------------------------------------------------------
    def _probe_netem(self) -> bool:
        try:
            self._switch_tc("qdisc", "add", "dev", "br0", "root", "netem", "delay", "1ms")
        except LabError as exc:
            self._say(f"tc netem is not available ({str(exc).rsplit(': ', 1)[-1]})")
            return False
        self._switch_tc("qdisc", "del", "dev", "br0", "root")
        return True

    def _probe_nft(self) -> bool:
        if shutil.which("nft") is None:
            self._say("nft is not installed; loss goes through the userspace wire")
            return False
        try:
            self._nft_apply()
        except LabError as exc:
            self._say(f"nftables did not work: {exc}")
            return False
        return True

    def _netem_apply(self, h: _Host, loss: float, delay_ms: float) -> None:
        args = ["loss", f"{loss * 100:.4f}%", "delay", f"{delay_ms:g}ms"]
        qdisc = ["qdisc", "replace", "dev", "eth0", "root", "netem"]
        _run(["tc", "-n", h.netns or "", *qdisc, *args])

    def _nft_apply(self) -> None:
        """Rewrites the switch's loss rules from every host's state, in one transaction."""
        # The bridge family's forward hook sees each frame once, with the port it came in on.
        rules = [
            f'iifname "{h.bridge_port}" numgen random mod 1000000 < {round(h.loss * 1e6)} drop'
            for h in self._hosts.values()
            if h.loss > 0
        ]
        chain = "type filter hook forward priority 0; policy accept;"
        script = "\n".join(
            [
                f"table bridge {NFT_TABLE} {{}}",  # so the delete below always has a table
                f"delete table bridge {NFT_TABLE}",
                f"table bridge {NFT_TABLE} {{",
                f"chain loss {{ {chain}",
                *rules,
                "}",
                "}",
            ]
        )
        assert self._switch is not None
        _run(["ip", "netns", "exec", self._switch, "nft", "-f", "-"], stdin=script)

    def _start_wire(self, h: _Host, loss: float, delay_ms: float) -> None:
        """Moves `h`'s frames off its bridge port and through a wire process."""
        assert self._switch is not None
        wire_end = f"w{h.index}"
        self._switch_ip("link", "add", wire_end, "type", "veth", "peer", "name", h.wire_port)
        self._switch_ip("link", "set", wire_end, "up")
        self._switch_ip("link", "set", h.wire_port, "up")
        command = ["ip", "netns", "exec", self._switch, sys.executable, str(Path(__file__))]
        command += ["wire", h.port, wire_end, repr(loss), repr(delay_ms / 1000)]
        h.wire = subprocess.Popen(command, stdout=subprocess.PIPE)
        assert h.wire.stdout is not None
        ready, _, _ = select.select([h.wire.stdout], [], [], 10.0)
        if not ready or h.wire.stdout.readline().strip() != b"ready":
            _end(h.wire)
            h.wire = None
            self._switch_ip("link", "del", wire_end)
            raise LabError(f"the wire for {h.name} did not start")
        # The host's port leaves the bridge first and the wire's joins after, so no frame
        # goes both ways; the gap is a few milliseconds of loss that TCP retransmits.
        if not h.cut:
            self._switch_ip("link", "set", h.port, "nomaster")
            self._switch_ip("link", "set", h.wire_port, "master", "br0")

    def _stop_wire(self, h: _Host) -> None:
        assert h.wire is not None
        if not h.cut:
            self._switch_ip("link", "set", h.wire_port, "nomaster")
            self._switch_ip("link", "set", h.port, "master", "br0")
        _end(h.wire)
        h.wire = None
        self._switch_ip("link", "del", f"w{h.index}")  # takes its peer with it

    # -- helpers ------------------------------------------------------------------------
    def _host(self, name: str) -> _Host:
        try:
            return self._hosts[name]
        except KeyError:
            raise ValueError(f"no host {name!r} in this lab: {self._names}") from None

    def _faultable(self, name: str) -> _Host:
        if name == OBSERVER:
            raise ValueError("the observer takes no faults")
        return self._host(name)

    def _signal(self, h: _Host, sig: int) -> None:
        pids = [_pid(m) for m in h.members]
        if not any(pids):
            raise LabError(f"no running process attached to {h.name} to stop")
        for pid in filter(None, pids):
            os.kill(pid, sig)

    def _switch_ip(self, *args: str) -> None:
        assert self._switch is not None
        _ip("-n", self._switch, *args)

    def _switch_tc(self, *args: str) -> None:
        assert self._switch is not None
        _run(["tc", "-n", self._switch, *args])


@functools.cache
def _lab_node_class() -> Callable[[NetLab, str, Path], LocalNode]:
    # Made on first use: importing LocalNode pulls in all of Shoal (over a second), and the
    # wire process, which runs this file, must start in milliseconds.
    from shoal.localmesh import LocalNode

    class LabNode(LocalNode):
        """A LocalNode served on a lab host; the test reaches it from the observer."""

        def __init__(self, lab: NetLab, host: str, home: Path) -> None:
            super().__init__(host, home, bind=lab.ip(host), prefix=lab.prefix(host))
            self.lab = lab

        def start(self, timeout: float = 60.0) -> LabNode:
            with self.lab.observer():
                super().start(timeout)
            return self

        def get(self, path: str, **params: Any) -> Any:
            with self.lab.observer():
                return super().get(path, **params)

    return LabNode


def build_mesh(
    lab: NetLab,
    root: Path,
    names: Sequence[str],
    *,
    region: str = "eu-de",
    settings: dict[str, Any] | None = None,
) -> dict[str, LocalNode]:
    """A hub (the first name) and members joined through `shoal invite`/`shoal join`, each
    on the lab host of its name; `settings` are added to every node's settings.yaml."""
    hub_name, *others = names
    hub = lab.node(hub_name, root / hub_name)
    _shoal(lab, hub_name, "init", "--name", hub_name, "--region", region, home=hub.home)
    _add_settings(hub.home, settings)
    nodes = {hub_name: hub.start()}
    for name in others:
        invited = _shoal(lab, hub_name, "invite", name, "--region", region, home=hub.home)
        token = invited.stdout.strip().splitlines()[-1]
        member = lab.node(name, root / name)
        # The member asks the hub from its own host, over the lab's network.
        _shoal(lab, name, "join", hub.http, token, home=member.home)
        _add_settings(member.home, settings)
        nodes[name] = member.start()
    return nodes


def _shoal(lab: NetLab, host: str, *args: str, home: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "shoal", *args, "--home", str(home)]
    result = lab.run(host, command, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise LabError(
            f"shoal {' '.join(args)} on {host} exited {result.returncode}:\n"
            f"{result.stdout}\n{result.stderr}"
        )
    return result


def _add_settings(home: Path, values: dict[str, Any] | None) -> None:
    if values:
        import yaml

        path = home / "settings.yaml"
        path.write_text(path.read_text() + yaml.safe_dump(values))


# -- system calls and commands ------------------------------------------------------------
def _run(command: Sequence[str], stdin: str | None = None) -> str:
    try:
        result = subprocess.run(
            list(command), input=stdin, capture_output=True, text=True, timeout=30
        )
    except FileNotFoundError as exc:
        raise LabError(f"{command[0]} is not installed") from exc
    if result.returncode != 0:
        raise LabError(f"{' '.join(command)}: {result.stderr.strip() or result.returncode}")
    return result.stdout


def _ip(*args: str) -> str:
    return _run(["ip", *args])


_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise LabError(f"setns: {os.strerror(errno)}")


@contextlib.contextmanager
def _in_netns(name: str) -> Iterator[None]:
    """Moves this thread (only) into namespace `name` for the block, then back."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(NETNS_DIR / name, os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(own)


def _ethtool(device: bytes, command: int, value: int) -> None:
    data = ctypes.create_string_buffer(struct.pack("II", command, value))
    request = struct.pack("16sP", device, ctypes.addressof(data))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        fcntl.ioctl(sock, SIOCETHTOOL, request)


def _sweep() -> None:
    """Deletes namespaces left by labs whose process was killed before it could clean up."""
    if not NETNS_DIR.is_dir():
        return
    for path in NETNS_DIR.iterdir():
        found = re.fullmatch(r"shoal-(\d+)-[0-9a-f]{4}-.+", path.name)
        if found and not Path(f"/proc/{found[1]}").exists():
            with contextlib.suppress(LabError):
                _ip("netns", "del", path.name)


def _delete_netns(name: str) -> None:
    # A process still inside would keep the namespace alive, unnamed; every process in a
    # lab namespace was started by the lab's test, so end it.
    pids = _run(["ip", "netns", "pids", name]).split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
    _ip("netns", "del", name)


def _pid(member: Any) -> int | None:
    if isinstance(member, int):
        return member
    process = getattr(member, "process", member)
    if isinstance(process, subprocess.Popen) and process.poll() is None:
        return process.pid
    return None


def _end(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            stream.close()


def _stop_node(node: LocalNode) -> None:
    if node.running():
        node.stop(timeout=10)


def _step(errors: list[str], action: Callable[..., object], *args: Any) -> None:
    try:
        action(*args)
    except Exception as exc:
        errors.append(f"{getattr(action, '__name__', action)}: {exc}")


@contextlib.contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """Holds Ctrl-C back until the block ends, so cleanup is never cut short."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda sig, _frame: caught.append(sig))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)
        if caught:
            raise KeyboardInterrupt


# -- the wire -----------------------------------------------------------------------------
def wire(host_port: str, bridge_port: str, loss: float, delay: float) -> None:
    """Carries frames between two interfaces; those from the host lose and wait.

    Runs in the switch namespace until terminated. Frames are held in a heap by due time,
    so a constant delay keeps their order, as a cable would.
    """
    ends = {}
    for name in (host_port, bridge_port):
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        sock.bind((name, ETH_P_ALL))
        sock.setblocking(False)
        ends[name] = sock
    from_host, from_bridge = ends[host_port], ends[bridge_port]
    selector = selectors.DefaultSelector()
    selector.register(from_host, selectors.EVENT_READ)
    selector.register(from_bridge, selectors.EVENT_READ)
    held: list[tuple[float, int, bytes]] = []
    count = 0
    print("ready", flush=True)
    while True:
        now = time.monotonic()
        while held and held[0][0] <= now:
            _send(from_bridge, heapq.heappop(held)[2])
        for key, _ in selector.select(max(0.0, held[0][0] - now) if held else None):
            end = key.fileobj
            assert isinstance(end, socket.socket)
            while True:
                try:
                    frame, address = end.recvfrom(65535)
                except BlockingIOError:
                    break
                if address[2] == PACKET_OUTGOING:
                    continue  # our own sends, seen again on the way out
                if end is from_bridge:
                    _send(from_host, frame)
                elif random.random() >= loss:
                    count += 1
                    heapq.heappush(held, (time.monotonic() + delay, count, frame))


def _send(sock: socket.socket, frame: bytes) -> None:
    # A full queue or a port taken down mid-test loses the frame, as a real link would.
    with contextlib.suppress(OSError):
        sock.send(frame)


if __name__ == "__main__" and sys.argv[1:2] == ["wire"]:
    _, _, host_port, bridge_port, loss, delay = sys.argv
    wire(host_port, bridge_port, float(loss), float(delay))
