"""A publish that runs out of disk: a clear DiskFullError, no partial version, reads go on.

Every test puts the node home on a real tmpfs of a few MiB that it mounts itself (this
needs root, as CI has), so each ENOSPC comes from the kernel, and delta-rs and pyarrow
report it their own way. Where the disk must fill at one exact step of a publish, a hook
fills it with a filler file just before that step; deleting the file frees the space.
"""

from __future__ import annotations

import errno
import importlib
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from shoal.contracts import dump_contract, load_contract
from shoal.errors import DiskFullError
from shoal.log import HistoryError
from shoal.node import Node
from shoal.products.history import ProductHistory

# `shoal.products` exports the function `publish`, which hides the module of that name.
pipeline = importlib.import_module("shoal.products.publish")

DISK_SIZE = "4m"
BIG_ROWS = 400_000  # about 6 MiB as Parquet: random doubles do not compress
SMALL = {"id": [1, 2, 3], "amount": [1.5, 2.5, 3.5]}


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of DISK_SIZE mounted in tmp_path, unmounted afterwards whatever happened."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    command = ["mount", "-t", "tmpfs", "-o", f"size={DISK_SIZE}", "tmpfs", str(mount_point)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        problem = done.stderr.strip() if done.returncode else ""
    except OSError as exc:
        problem = str(exc)
    if problem:
        pytest.fail(
            f"the disk-full tests need root (or CAP_SYS_ADMIN) to mount a tmpfs: "
            f"`{' '.join(command)}` failed: {problem}",
            pytrace=False,
        )
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)], check=False).returncode:
            subprocess.run(["umount", "--lazy", str(mount_point)], check=False)


def grow(mount_point: Path, size: str) -> None:
    """Make the tmpfs bigger in place (its files stay)."""
    subprocess.run(["mount", "-o", f"remount,size={size}", str(mount_point)], check=True)


def fill(mount_point: Path, leave: int = 0) -> Path:
    """Write a filler file until the disk is full, then free `leave` bytes of it."""
    filler = mount_point / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        for chunk in (b"\0" * (1 << 16), b"\0" * 4096):
            try:
                while True:
                    os.write(fd, chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)
    if leave:
        os.truncate(filler, filler.stat().st_size - leave)
    return filler


def big_table() -> pa.Table:
    return pa.table(
        {"id": pa.array(range(BIG_ROWS), pa.int64()), "amount": pc.random(BIG_ROWS, initializer=7)}
    )


def home_files(home: Path) -> dict[str, bytes]:
    """Every file of a node home but its locks and scratch, with its bytes.

    (conftest's `tree_snapshot` looks for "tmp" in the absolute path, so under /tmp it sees
    no file at all.)
    """
    return {
        str(path.relative_to(home)): path.read_bytes()
        for path in sorted(home.rglob("*"))
        if path.is_file() and path.relative_to(home).parts[0] not in ("locks", "tmp")
    }


def count(node: Node, product: str) -> int:
    return node.sql(f"SELECT count(*) AS n FROM {product}").read_all().to_pylist()[0]["n"]


def scratch(home: Path) -> list[Path]:
    tmp = home / "tmp"
    return list(tmp.iterdir()) if tmp.exists() else []


def test_a_first_publish_that_does_not_fit_leaves_no_product(disk, write_parquet):
    node = Node.init(disk / "home", "shop")
    big = write_parquet(big_table())
    with pytest.raises(DiskFullError) as info:
        node.publish("sales", str(big))
    error = info.value
    assert (error.exit_code, error.http_status) == (9, 507)
    assert (error.product, error.folder) == ("sales", str(node.home.root))
    start = "disk full while publishing 'sales': no space left on the disk holding the node home"
    assert error.message.startswith(f"{start} {node.home.root} (")
    assert "nothing was published and no product was created" in error.message
    assert error.hint is not None
    assert "free space" in error.hint and "move the node home" in error.hint
    assert node.list_products() == []
    assert not (node.home.products_dir / "sales").exists()
    assert scratch(node.home.root) == []
    grow(disk, "32m")
    result = node.publish("sales", str(big))
    assert (result.version, result.rows_total) == (1, BIG_ROWS)
    assert [s["entries"] for s in node.verify("sales")] == [1]


def test_a_later_publish_that_does_not_fit_keeps_the_previous_version(disk, write_parquet):
    node = Node.init(disk / "home", "shop")
    node.publish("sales", str(write_parquet(SMALL)))
    before = home_files(node.home.root)
    big = write_parquet(big_table())
    with pytest.raises(DiskFullError, match="nothing was published; version 1 is still the latest"):
        node.publish("sales", str(big))
    assert home_files(node.home.root) == before  # table, log and contract as they were
    assert scratch(node.home.root) == []
    assert count(node, "sales") == 3
    reopened = Node.open(node.home.root)
    assert count(reopened, "sales") == 3
    assert [s["version"] for s in reopened.verify("sales")] == [1]
    grow(disk, "32m")
    assert reopened.publish("sales", str(big)).version == 2
    assert count(reopened, "sales") == 3 + BIG_ROWS
    assert [s["entries"] for s in reopened.verify("sales")] == [2]


def wider_contract(node: Node, tmp_path: Path) -> Path:
    """The product's contract with an optional column more (a publish under it merges schemas)."""
    contract = load_contract(node.contract_text("sales"))
    data = contract.model_dump(by_alias=True, exclude_none=True)
    data["schema"][0]["properties"].append(
        {"name": "channel", "logicalType": "string", "physicalType": "string"}
    )
    path = tmp_path / "wider.yaml"
    path.write_text(dump_contract(type(contract).model_validate(data)))
    return path


@pytest.mark.parametrize("mode", ["append", "overwrite", "upsert", "new-column"])
def test_a_delta_commit_on_a_full_disk_is_rolled_back(
    disk, write_parquet, monkeypatch, tmp_path, mode
):
    """The staged files fit; the disk fills just before delta-rs writes its commit."""
    node = Node.init(disk / "home", "shop")
    node.publish("sales", str(write_parquet(SMALL)))
    before = home_files(node.home.root)
    commit = pipeline._commit
    filler: list[Path] = []

    def full_disk_commit(*args, **kwargs):
        filler.append(fill(disk))
        return commit(*args, **kwargs)

    monkeypatch.setattr(pipeline, "_commit", full_disk_commit)
    change = {"id": [3, 4], "amount": [9.5, 4.5]}
    options: dict = {"mode": "upsert", "key": ["id"]} if mode == "upsert" else {"mode": mode}
    if mode == "new-column":
        change["channel"] = ["web", None]
        options = {"contract_file": wider_contract(node, tmp_path)}
    source = str(write_parquet(change))
    with pytest.raises(DiskFullError, match="version 1 is still the latest"):
        node.publish("sales", source, **options)
    monkeypatch.undo()
    assert filler, "the hook never ran"
    assert home_files(node.home.root) == before  # no marker, no stray file, no contract
    reopened = Node.open(node.home.root)  # the disk is still full: reading works all the same
    assert count(reopened, "sales") == 3
    assert [s["version"] for s in reopened.verify("sales")] == [1]
    filler[0].unlink()
    assert reopened.publish("sales", source, **options).version == 2
    assert [s["entries"] for s in reopened.verify("sales")] == [2]


def test_a_new_contract_that_does_not_fit_is_not_left_behind(
    disk, write_parquet, monkeypatch, tmp_path
):
    node = Node.init(disk / "home", "shop")
    node.publish("sales", str(write_parquet(SMALL)))
    before = home_files(node.home.root)
    write = pipeline.atomic_write
    filler: list[Path] = []

    def full_disk_write(path, data):
        filler.append(fill(disk))
        return write(path, data)

    monkeypatch.setattr(pipeline, "atomic_write", full_disk_write)
    source = str(write_parquet(SMALL | {"channel": ["web", None, "shop"]}))
    contract = wider_contract(node, tmp_path)
    with pytest.raises(DiskFullError, match="version 1 is still the latest"):
        node.publish("sales", source, contract_file=contract)
    monkeypatch.undo()
    assert filler, "the hook never ran"
    assert home_files(node.home.root) == before  # not even atomic_write's scratch copy
    filler[0].unlink()
    assert node.publish("sales", source, contract_file=contract).version == 2
    assert [c["name"] for c in node.contract("sales").columns_summary()][-1] == "channel"


def _publish_until(node: Node, write_parquet, torn: bool) -> int:
    """Publish small versions until the next log line would (or would not) need a new page.

    tmpfs gives space by the page: a line that fits in the last page of entries.jsonl is
    written on a full disk and the checkpoint fails; one that does not is torn.
    """
    entries = node.home.products_dir / "sales" / "log" / "entries.jsonl"
    page = os.sysconf("SC_PAGE_SIZE")
    for version in range(1, 20):
        node.publish("sales", str(write_parquet({"id": [version], "amount": [1.0]})))
        data = entries.read_bytes()
        line = len(data) // data.count(b"\n")
        room = -len(data) % page
        if (0 < room < line // 2) if torn else (room > 2 * line):
            return version
    raise AssertionError("the log never reached the page boundary wanted")


@pytest.mark.parametrize("torn", [True, False], ids=["entry-torn", "checkpoint-unsigned"])
def test_disk_full_between_commit_and_log_is_recovered(disk, write_parquet, monkeypatch, torn):
    node = Node.init(disk / "home", "shop")
    latest = _publish_until(node, write_parquet, torn)
    record = ProductHistory.record
    filler: list[Path] = []

    def full_disk_record(self, key):
        filler.append(fill(disk))
        return record(self, key)

    monkeypatch.setattr(ProductHistory, "record", full_disk_record)
    with pytest.raises(DiskFullError) as info:
        node.publish("sales", str(write_parquet({"id": [99], "amount": [2.0]})))
    monkeypatch.undo()
    new = latest + 1
    assert f"version {new} was committed, but signing it into the product's log failed" in (
        info.value.message
    )
    assert info.value.hint is not None and "shoal verify sales" in info.value.hint
    log_dir = node.home.products_dir / "sales" / "log"
    entries = (log_dir / "entries.jsonl").read_bytes()
    if torn:
        assert not entries.endswith(b"\n"), "the append was meant to be cut short"
    else:
        assert entries.count(b"\n") == new, "the entry was meant to be written"
    assert (log_dir / "publishing").exists()  # the marker: recovery's cue
    # Still full: the node opens, reads the committed version, and verify says what lags.
    reopened = Node.open(node.home.root)
    assert count(reopened, "sales") == new
    with pytest.raises(HistoryError):
        reopened.verify("sales")
    filler[0].unlink()
    recovered = Node.open(node.home.root)  # opening with space completes the publish
    assert [(s["entries"], s["version"]) for s in recovered.verify("sales")] == [(new, new)]
    assert not (log_dir / "publishing").exists()
    assert recovered.publish("sales", str(write_parquet(SMALL))).version == new + 1
    assert [s["entries"] for s in recovered.verify("sales")] == [new + 1]


@pytest.mark.slow
def test_a_delta_checkpoint_that_does_not_fit_keeps_the_committed_version(
    disk, write_parquet, monkeypatch, caplog
):
    """delta-rs checkpoints after every 100th commit and reports its failure as the commit's.

    The version is committed by then: its files must stay and it must be logged.
    """
    grow(disk, "8m")
    node = Node.init(disk / "home", "shop")
    source = str(write_parquet(SMALL))
    for _ in range(99):
        node.publish("sales", source)
    commit = pipeline._commit
    page = os.sysconf("SC_PAGE_SIZE")

    def nearly_full_disk_commit(*args, **kwargs):
        filler = fill(disk, leave=2 * page)  # room for the commit file, not the checkpoint
        try:
            return commit(*args, **kwargs)
        finally:
            filler.unlink()

    monkeypatch.setattr(pipeline, "_commit", nearly_full_disk_commit)
    with caplog.at_level(logging.WARNING, logger="shoal.products.publish"):
        result = node.publish("sales", source)
    assert "version 100 is committed; delta-rs then failed" in caplog.text
    assert "No space left on device" in caplog.text
    assert (result.version, result.rows_added, result.rows_total) == (100, 3, 300)
    assert count(node, "sales") == 300
    assert [(s["entries"], s["files"]) for s in node.verify("sales")] == [(100, 100)]


def test_cli_prints_the_error_and_exits_9_without_a_traceback(disk, write_parquet):
    home = disk / "home"
    Node.init(home, "shop")
    big = write_parquet(big_table())
    done = subprocess.run(
        [sys.executable, "-m", "shoal", "publish", "sales", str(big), "--home", str(home)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env=os.environ | {"SHOAL_DEBUG": "0"},  # tracebacks are shown only when debugging
    )
    assert done.returncode == 9, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    lines = done.stderr.splitlines()
    start = "error: disk full while publishing 'sales': no space left on the disk holding the node"
    assert lines[0].startswith(f"{start} home {home} (")
    assert lines[0].endswith("nothing was published and no product was created")
    assert lines[1].startswith("hint: free space on that disk, or move the node home")
    assert len(lines) == 2, done.stderr
