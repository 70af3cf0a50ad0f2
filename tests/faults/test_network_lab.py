"""The network fault lab against real traffic: echo servers in one host, clients in another,
and two Shoal nodes whose hub sees a cut member go down and come back."""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import time

import pytest

from shoal.localmesh import wait_until

from .network import MECHANISMS, NetLab, UnsupportedFaultError, build_mesh

pytestmark = [pytest.mark.faults, pytest.mark.multiprocess, pytest.mark.timeout(120)]

# TCP and UDP echo on one port (0: a free one), which it prints once it listens.
ECHO = """
import socket, sys, threading
host = sys.argv[1]
tcp = socket.create_server((host, 0))
port = tcp.getsockname()[1]
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind((host, port))
def echo_udp():
    while True:
        data, peer = udp.recvfrom(2048)
        udp.sendto(data, peer)
def echo_tcp(conn):
    with conn:
        while data := conn.recv(65536):
            conn.sendall(data)
threading.Thread(target=echo_udp, daemon=True).start()
print("ready", port, flush=True)
while True:
    conn, _ = tcp.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    threading.Thread(target=echo_tcp, args=(conn,), daemon=True).start()
"""


def _netns_list() -> set[str]:
    if shutil.which("ip") is None:
        return set()
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in listed.splitlines() if line.strip()}


def _no_namespaces(reason: str) -> None:
    """Skip where namespaces cannot be made; under CI, which can make them (it runs as root
    and `make test` installs iproute2), that is a failure, not a skip."""
    if os.environ.get("CI"):
        pytest.fail(f"CI must be able to make network namespaces: {reason}")
    pytest.skip(reason)


@contextlib.contextmanager
def _lab(*hosts: str, isolated: bool = True, **options):
    """A lab that must leave no namespace behind, however the test ends."""
    names: set[str] = set()
    try:
        with NetLab(hosts, **options) as lab:
            if isolated and not lab.isolated:
                _no_namespaces(f"no network namespaces here: {lab.describe()}")
            names = lab.namespaces
            yield lab
    finally:
        assert not names & _netns_list(), "the lab left namespaces behind"


@pytest.fixture
def lab():
    with _lab("a", "b") as lab:
        yield lab


def _echo(lab: NetLab, host: str) -> tuple[str, int]:
    """Starts an echo server on `host`; gives its address."""
    command = [sys.executable, "-c", ECHO, lab.ip(host)]
    server = lab.popen(host, command, stdout=subprocess.PIPE)
    ready, _, _ = select.select([server.stdout], [], [], 10)
    assert ready, "the echo server did not start"
    word, port = server.stdout.readline().split()
    assert word == b"ready"
    return lab.ip(host), int(port)


def _round_trip(lab: NetLab, src: str, to: tuple[str, int], timeout: float = 0.5) -> float | None:
    """Seconds for a TCP connect and one echo from `src`, or None when it fails in time."""
    started = time.monotonic()
    with (
        lab.inside(src),
        contextlib.suppress(OSError),
        socket.create_connection(to, timeout=timeout) as sock,
    ):
        sock.sendall(b"ping")
        if sock.recv(4) == b"ping":
            return time.monotonic() - started
    return None


def _rtts(lab: NetLab, src: str, to: tuple[str, int], count: int = 7) -> list[float]:
    """Round trips of one-byte echoes over one TCP connection from `src`."""
    with lab.inside(src), socket.create_connection(to, timeout=5) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        times = []
        for _ in range(count):
            started = time.monotonic()
            sock.sendall(b"x")
            assert sock.recv(1) == b"x"
            times.append(time.monotonic() - started)
    return times


def _udp_echoes(
    lab: NetLab, src: str, to: tuple[str, int], count: int
) -> tuple[float, list[float]]:
    """Sends `count` numbered datagrams from `src`; gives the share echoed and their RTTs."""
    answered: dict[int, float] = {}
    with lab.inside(src), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect(to)
        sock.setblocking(False)

        def drain(wait: float) -> None:
            while select.select([sock], [], [], wait)[0]:
                number, sent = struct.unpack("!Id", sock.recv(64))
                answered[number] = time.monotonic() - sent

        for number in range(count):
            sock.send(struct.pack("!Id", number, time.monotonic()))
            # Paced and drained as it goes, so no socket buffer overflows and loses packets
            # that the lab did not drop.
            drain(0)
            if number % 20 == 19:
                time.sleep(0.002)
        # Late echoes (held by a delay) come within half a second of quiet.
        while len(answered) < count and select.select([sock], [], [], 0.5)[0]:
            drain(0)
    return len(answered) / count, list(answered.values())


def test_a_cut_host_reaches_no_one_until_healed():
    with _lab("a", "b", "c") as lab:
        at = {host: _echo(lab, host) for host in ("a", "b", "c")}
        assert _round_trip(lab, "a", at["b"]) is not None
        lab.cut("b")
        started = time.monotonic()
        assert _round_trip(lab, "a", at["b"]) is None
        assert time.monotonic() - started < 1.5  # a timeout, not a hang
        assert _round_trip(lab, "b", at["a"]) is None
        assert _round_trip(lab, "observer", at["b"]) is None
        assert _round_trip(lab, "a", at["c"]) is not None  # the others still meet
        lab.heal("b")
        for src, dst in (("a", "b"), ("b", "a"), ("observer", "b")):
            wait_until(lambda src=src, dst=dst: _round_trip(lab, src, at[dst]), timeout=5)
        assert "bridge port" in lab.mechanisms["cut"]


@pytest.mark.parametrize("allowed", [MECHANISMS, ("wire",)], ids=["best", "wire"])
def test_loss_drops_a_plausible_share_of_packets(allowed):
    with _lab("a", "b", mechanisms=allowed) as lab:
        if allowed == ("wire",):
            assert "wire" in lab.mechanisms["loss"]
        print(f"loss mechanism: {lab.mechanisms['loss']}")
        at_a = _echo(lab, "a")
        assert _udp_echoes(lab, "b", at_a, 200)[0] == 1.0
        lab.degrade("b", loss=0.3)
        share, _ = _udp_echoes(lab, "b", at_a, 1000)
        # 700 expected of 1000; the standard deviation is about 15.
        assert 0.6 <= share <= 0.8, share
        lab.restore("b")
        assert _udp_echoes(lab, "b", at_a, 200)[0] == 1.0


def test_delay_adds_to_the_round_trip(lab):
    print(f"delay mechanism: {lab.mechanisms['delay']}")
    at_b = _echo(lab, "b")
    before = statistics.median(_rtts(lab, "a", at_b))
    lab.degrade("b", delay_ms=150)
    during = statistics.median(_rtts(lab, "a", at_b, count=5))
    assert during - before >= 0.135, (before, during)  # a lower bound: this machine is noisy
    lab.restore("b")
    after = statistics.median(_rtts(lab, "a", at_b))
    assert after < before + 0.05, (before, after)


@pytest.mark.parametrize("allowed", [MECHANISMS, ("wire",)], ids=["best", "wire"])
def test_loss_and_delay_together(allowed):
    with _lab("a", "b", mechanisms=allowed) as lab:
        at_a = _echo(lab, "a")
        _udp_echoes(lab, "b", at_a, 10)  # both sides learn each other's MAC before the loss
        lab.degrade("b", loss=0.25, delay_ms=60)
        share, rtts = _udp_echoes(lab, "b", at_a, 1000)
        assert 0.65 <= share <= 0.85, share
        assert min(rtts) >= 0.055
        assert "delay by the wire" in lab.log[-1] or "netem" in lab.log[-1]


def test_without_namespaces_a_cut_stops_the_host_processes():
    with _lab("a", isolated=False, namespaces=False) as lab:
        assert not lab.isolated
        assert "SIGSTOP" in lab.mechanisms["cut"]
        at_a = _echo(lab, "a")
        assert _round_trip(lab, "a", at_a) is not None
        lab.cut("a")
        # The kernel still accepts the connection, but no echo comes from a stopped process.
        assert _round_trip(lab, "a", at_a) is None
        lab.heal("a")
        assert _round_trip(lab, "a", at_a, timeout=5) is not None
        with pytest.raises(UnsupportedFaultError):
            lab.degrade("a", loss=0.1)


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_namespaces_and_processes_go_even_when_the_test_fails(error):
    names: set[str] = set()
    try:
        with NetLab(["a", "b"]) as lab:
            if not lab.isolated:
                _no_namespaces("no network namespaces here")
            names = lab.namespaces
            sleeper = lab.popen("a", [sys.executable, "-c", "import time; time.sleep(60)"])
            lab.cut("b")
            lab.degrade("a", loss=0.1, delay_ms=10)
            raise error("the test failed")
    except error:
        pass
    assert len(names) == 4  # switch, a, b and the observer
    assert not names & _netns_list()
    assert sleeper.poll() is not None


def test_a_later_lab_removes_namespaces_of_a_killed_run():
    if shutil.which("ip") is None:
        _no_namespaces("no ip command (iproute2)")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    stale = f"shoal-{gone.pid}-abcd-0-a"
    if subprocess.run(["ip", "netns", "add", stale], capture_output=True).returncode != 0:
        _no_namespaces("no network namespaces here")
    with _lab("a"):
        assert stale not in _netns_list()


def test_a_cut_member_is_reported_down_and_then_up_again(tmp_path):
    with _lab("hub", "shop") as lab:
        nodes = build_mesh(lab, tmp_path, ["hub", "shop"], settings={"ping_interval": 0.2})
        hub, shop = nodes["hub"], nodes["shop"]
        assert hub.http.startswith(f"https://{lab.ip('hub')}:")
        assert shop.http.startswith(f"https://{lab.ip('shop')}:")

        def shop_state() -> str:
            members = {m["name"]: m["state"] for m in hub.get("/api/v1/nodes")}
            assert set(members) == {"hub", "shop"}
            return members["shop"]

        wait_until(lambda: shop_state() == "up", timeout=15, what="shop up")
        lab.cut("shop")
        wait_until(lambda: shop_state() == "down", timeout=15, what="shop down")
        lab.heal("shop")
        wait_until(lambda: shop_state() == "up", timeout=15, what="shop up again")
