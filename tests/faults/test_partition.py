"""Replicas across a real network with faults: a partitioned owner that keeps publishing, a
replica killed in the middle of a pull, and a replica whose disk fills up.

The nodes run in network namespaces joined by a bridge (tests/faults/network.py); the lab
prints which mechanism each fault used (tc netem where the kernel has it), or that it fell
back to SIGSTOP where namespaces cannot be made.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import subprocess
from pathlib import Path

import httpx
import pyarrow as pa
import pytest

from shoal.mesh.replication import CHUNK
from shoal.node import Node
from tests.mesh.processes import shoal

from .meshes import FAST, events, wait_until, write_orders
from .network import NetLab, build_mesh

pytestmark = [pytest.mark.multiprocess, pytest.mark.faults, pytest.mark.timeout(300)]


def _lines(home: Path, *parts: str) -> list[bytes]:
    return home.joinpath(*parts, "log", "entries.jsonl").read_bytes().splitlines()


def _sizes_by_sha256(folder: Path) -> dict[str, int]:
    return {
        hashlib.sha256(path.read_bytes()).hexdigest(): path.stat().st_size
        for path in folder.rglob("*.parquet")
    }


def _mid_file(incoming: Path, sizes: dict[str, int], margin: int) -> dict[str, int]:
    """Downloads in `incoming` that have begun and are at least `margin` bytes short of the
    end: part name -> bytes so far."""
    found = {}
    for part in incoming.glob("*.part"):
        with contextlib.suppress(FileNotFoundError):  # renamed as it finished
            have = part.stat().st_size
            whole = sizes.get(part.name.removesuffix(".part"), 0)
            if 0 < have <= whole - margin:
                found[part.name] = have
    return found


def _held(lab: NetLab, node, product: str) -> dict[str, int]:
    """node -> product version, for every holder `node` sees."""
    with lab.observer():
        try:
            response = node.call("GET", f"/api/v1/products/{product}", timeout=10)
        except httpx.HTTPError:
            return {}
    if response.status_code == 404:
        return {}  # not in its catalog yet
    found = response.json()
    return {h["node"]: h["version"] for h in found[0]["holders"]}


def _query(lab: NetLab, node, sql: str) -> pa.Table:
    with lab.observer():
        response = node.call("POST", "/api/v1/query", json={"sql": sql}, timeout=60)
    assert response.status_code == 200, response.text
    return pa.ipc.open_stream(pa.py_buffer(response.content)).read_all()


def test_partitioned_owner_publishes_50_versions_then_catches_up(tmp_path):
    """Afterwards: every replica is at the owner's checkpoint with all 51 versions, each
    once, its log identical to the owner's line for line; during the cut the replicas kept
    answering from their last verified version."""
    with NetLab(["a", "b", "c"]) as lab:
        nodes = build_mesh(lab, tmp_path, ["a", "b", "c"], settings=FAST)
        owner = Node.open(nodes["a"].home)  # publishes beside its running server, as the CLI
        data = write_orders(tmp_path / "orders.parquet", 0, 200)
        owner.publish("sales", str(data))
        owner.set_replicas("sales", 2)
        wait_until(
            lambda: _held(lab, nodes["c"], "a.sales") == {"a": 1, "b": 1, "c": 1},
            timeout=60,
            what="copies of version 1",
        )
        lab.cut("a")
        for index in range(50):
            more = write_orders(tmp_path / f"more{index}.parquet", 1000 + index * 10, 10)
            owner.publish("sales", str(more))
        # Cut off: the replicas answer from what they verified, the owner's work goes on.
        table = _query(lab, nodes["b"], "SELECT count(*) AS n FROM a.sales")
        assert table.to_pylist() == [{"n": 200}]
        assert json.loads(table.schema.metadata[b"shoal.read"])["a.sales"]["node"] in {"b", "c"}
        # Heal onto a lossy, slow link from the owner: catching up must still be exact.
        lab.degrade("a", loss=0.05, delay_ms=30)
        lab.heal("a")
        wait_until(
            lambda: _held(lab, nodes["b"], "a.sales") == {"a": 51, "b": 51, "c": 51},
            timeout=120,
            interval=0.5,
            what="replicas at version 51",
        )
        lab.restore("a")
        owner_lines = _lines(nodes["a"].home, "products", "sales")
        assert len(owner_lines) == 51
        for name in ("b", "c"):
            copy = _lines(nodes[name].home, "replicas", "a", "sales")
            assert copy == owner_lines
            versions = [json.loads(line)["entry"]["version"] for line in copy]
            assert versions == list(range(1, 52))
        table = _query(lab, nodes["c"], "SELECT count(*) AS n FROM a.sales WHERE order_id >= 0")
        assert table.to_pylist() == [{"n": 700}]
        for name in ("b", "c"):
            assert shoal("verify", home=nodes[name].home).returncode == 0


def test_replica_killed_during_a_pull_resumes_with_a_verified_prefix(tmp_path):
    """Afterwards: the replica killed with SIGKILL mid-pull restarts, resumes the download
    it had begun, and ends with the owner's history, a verified prefix at every moment."""
    with NetLab(["a", "b"]) as lab:
        # b downloads at most 2 MB/s, so pulling the ~24 MB version takes about ten seconds:
        # long enough to kill it mid-pull on any machine (a delayed link was not: on a fast
        # one every file had arrived before the kill).
        nodes = build_mesh(
            lab,
            tmp_path,
            ["a", "b"],
            settings=FAST | {"publish_file_rows": 200_000, "replication_max_mbps": 2},
        )
        owner = Node.open(nodes["a"].home)
        owner.publish("sales", str(write_orders(tmp_path / "small.parquet", 0, 100)))
        owner.set_replicas("sales", 1)
        wait_until(lambda: _held(lab, nodes["b"], "a.sales").get("b") == 1, timeout=60)
        big = tmp_path / "big.parquet"
        import pyarrow.parquet as pq

        rows = 1_500_000
        pq.write_table(
            pa.table(
                {
                    "order_id": pa.array(range(100, 100 + rows), pa.int64()),
                    # Random-looking values so the files stay big (they do not compress).
                    "amount": pa.array([float((i * 2654435761) % 1000003) for i in range(rows)]),
                }
            ),
            big,
        )
        owner.publish("sales", str(big))
        sizes = _sizes_by_sha256(nodes["a"].home / "products" / "sales" / "table")
        incoming = nodes["b"].home / "replicas" / "a" / "sales" / "incoming"
        # Killed while a file is at least a chunk short of its end (half a second at the
        # rate limit): a part that happens to be whole is renamed without a request, and
        # would leave nothing to resume.
        wait_until(
            lambda: _mid_file(incoming, sizes, margin=CHUNK),
            timeout=60,
            interval=0.02,
            what="a download under way",
        )
        nodes["b"].kill()
        partial = _mid_file(incoming, sizes, margin=1)
        assert partial
        # Before it restarts, the copy is the old version, whole and verified.
        copy_lines = _lines(nodes["b"].home, "replicas", "a", "sales")
        owner_lines = _lines(nodes["a"].home, "products", "sales")
        assert copy_lines == owner_lines[: len(copy_lines)]
        assert shoal("verify", home=nodes["b"].home).returncode == 0
        with lab.observer():
            nodes["b"].start()
        wait_until(
            lambda: _held(lab, nodes["a"], "a.sales").get("b") == 2,
            timeout=120,
            interval=0.5,
            what="the copy at version 2",
        )
        assert _lines(nodes["b"].home, "replicas", "a", "sales") == owner_lines
        log = nodes["b"].log_path.read_text()
        assert any(f"at byte {size}" in log for size in partial.values()), (partial, log[-3000:])
        assert shoal("verify", home=nodes["b"].home).returncode == 0
        table = _query(lab, nodes["b"], "SELECT count(*) AS n FROM a.sales WHERE order_id >= 0")
        assert table.to_pylist() == [{"n": 100 + rows}]


@pytest.fixture
def small_disk(tmp_path):
    """A 48 MiB tmpfs: a real file system that fills up (CI runs as root)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.fail(f"this test mounts a tmpfs and needs root: {result.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_pull_that_runs_out_of_disk_fails_clearly_and_keeps_the_old_version(tmp_path, small_disk):
    """Afterwards: the pull failed with a clear error, no partial version is visible, reads
    of the old version keep working, and once there is space the copy completes."""
    with NetLab(["a", "b"]) as lab:
        nodes = build_mesh(lab, tmp_path, ["a", "b"], settings=FAST)
        # Move b's home onto the small disk before it serves.
        nodes["b"].stop()
        moved = small_disk / "b"
        subprocess.run(["cp", "-a", str(nodes["b"].home), str(moved)], check=True)
        nodes["b"].home = moved
        with lab.observer():
            nodes["b"].start()
        owner = Node.open(nodes["a"].home)
        owner.publish("sales", str(write_orders(tmp_path / "small.parquet", 0, 100)))
        owner.set_replicas("sales", 1)
        wait_until(lambda: _held(lab, nodes["a"], "a.sales").get("b") == 1, timeout=60)
        filler = small_disk / "filler"
        filler.write_bytes(b"\0" * (36 * 2**20))
        big = tmp_path / "big.parquet"
        import pyarrow.parquet as pq

        rows = 1_500_000
        pq.write_table(
            pa.table(
                {
                    "order_id": pa.array(range(100, 100 + rows), pa.int64()),
                    "amount": pa.array([float((i * 2654435761) % 1000003) for i in range(rows)]),
                }
            ),
            big,
        )
        owner.publish("sales", str(big))
        wait_until(
            lambda: "no space left" in nodes["b"].log_path.read_text(),
            timeout=60,
            what="the pull failing for want of space",
        )
        copy = moved / "replicas" / "a" / "sales"
        assert len(_lines(moved, "replicas", "a", "sales")) == 1  # still version 1
        assert not (copy / "log" / "pulling").exists()
        assert not list((copy / "incoming").glob("*.part"))
        # Reads go on: the answer comes from the owner, and b's own copy still verifies.
        table = _query(lab, nodes["b"], "SELECT count(*) AS n FROM a.sales")
        assert table.to_pylist() == [{"n": 100 + rows}]
        assert shoal("verify", home=moved).returncode == 0
        filler.unlink()
        wait_until(
            lambda: _held(lab, nodes["a"], "a.sales").get("b") == 2,
            timeout=120,
            interval=0.5,
            what="the copy at version 2 once there is space",
        )
        assert not events(moved, "copy-refused")
