"""The audit log: appends, filters, the chain and its checks, concurrency, hostile input,
the Arrow view, the events layer and `shoal audit`."""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from shoal import audit
from shoal.audit import trail
from shoal.config import Home, create_home
from shoal.engine import LockedSession
from shoal.errors import UsageError
from shoal.events import read_events, record_event
from shoal.localmesh import wait_until
from shoal.log import Checkpoint, HistoryError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return create_home(tmp_path / "home", "berlin", "eu-de")


def entries_path(home: Home) -> Path:
    return home.root / "audit" / "entries.jsonl"


def checkpoint_path(home: Home) -> Path:
    return home.root / "audit" / "checkpoint"


def fill(home: Home, count: int = 5) -> None:
    for i in range(count):
        audit.record(
            home,
            "read",
            "user:alice" if i % 2 else "user:bob",
            product="berlin.sales",
            columns=["sku", "price"],
            rows=i,
            fragment=f"{i:064x}",
        )


def forget_tails() -> None:
    """Make this process read the log's files again, as another process would."""
    with trail._LOCK:
        trail._TAILS.clear()


# -- appending and reading ----------------------------------------------------------------
def test_record_gives_a_chained_signed_entry(home):
    first = audit.record(home, "publish", "cli", product="berlin.sales", version=1, rows=10)
    second = audit.record(home, "grant", "user:root", role="analyst", to="user:alice")
    assert first["seq"] == 0 and second["seq"] == 1
    assert first["prev"] == ""
    assert len(second["prev"]) == 64 and second["prev"] != first["prev"]
    assert first["node"] == "berlin" and first["key_id"] == home.key().key_id
    assert first["detail"] == {"version": 1, "rows": 10}
    assert "product" not in second
    parsed = datetime.fromisoformat(first["time"])
    assert parsed.tzinfo is not None and parsed.utcoffset() == timedelta(0)
    assert first["time"].endswith("+00:00") and len(first["time"].split(".")[1]) == 9
    assert audit.read(home) == [first, second]
    line = entries_path(home).read_bytes().split(b"\n")[0]
    assert set(json.loads(line)) == {"entry", "signature"}


def test_read_filters(home):
    fill(home, 6)
    audit.record(home, "publish", "cli", product="berlin.stock")
    assert len(audit.read(home)) == 7
    assert {e["who"] for e in audit.read(home, who="user:alice")} == {"user:alice"}
    assert len(audit.read(home, who="user:alice")) == 3
    assert [e["action"] for e in audit.read(home, action="publish")] == ["publish"]
    assert len(audit.read(home, product="berlin.sales")) == 6
    assert len(audit.read(home, since="1h")) == 7
    assert audit.read(home, since=datetime.now(UTC) + timedelta(minutes=1)) == []
    naive_past = datetime.now(UTC).replace(tzinfo=None) - timedelta(minutes=1)
    assert len(audit.read(home, since=naive_past)) == 7
    assert audit.read(home, who="user:alice", action="publish") == []


def test_an_empty_log(home):
    assert audit.read(home) == []
    assert audit.as_arrow(home).num_rows == 0
    assert audit.audit_table(home).schema == audit.AUDIT_SCHEMA
    result = audit.verify(home)
    assert result["entries"] == 0 and result["checkpoint"] is None


def test_parse_since():
    now = datetime(2025, 5, 1, 12, 0, tzinfo=UTC)
    assert audit.parse_since("2h", now) == now - timedelta(hours=2)
    assert audit.parse_since("7d", now) == now - timedelta(days=7)
    assert audit.parse_since(" 90s ", now) == now - timedelta(seconds=90)
    assert audit.parse_since("4w", now) == now - timedelta(weeks=4)
    assert audit.parse_since("2025-05-01") == datetime(2025, 5, 1, tzinfo=UTC)
    assert audit.parse_since("2025-05-01T09:30Z") == datetime(2025, 5, 1, 9, 30, tzinfo=UTC)
    cest = audit.parse_since("2025-05-01T11:30+02:00")
    assert cest == datetime(2025, 5, 1, 9, 30, tzinfo=UTC)
    for bad in ("yesterday", "", "2h ago", "-2h", "9999999w", "2025-13-01"):
        with pytest.raises(UsageError, match="invalid time"):
            audit.parse_since(bad)


# -- verification and tampering ------------------------------------------------------------
def test_verify_checks_the_chain_and_gives_the_checkpoint(home):
    fill(home, 9)
    result = audit.verify(home)
    assert result["entries"] == 9 and result["signed"] == 9 and result["unsigned"] == 0
    assert result["torn_bytes"] == 0
    checkpoint = Checkpoint.parse(result["checkpoint"])
    assert checkpoint.origin == "berlin/_audit" and checkpoint.size == 9
    assert checkpoint.verify(home.key().public, home.key().public_bytes)
    assert checkpoint_path(home).read_text() == result["checkpoint"]


def _lines(home: Home) -> list[bytes]:
    return entries_path(home).read_bytes().splitlines(keepends=True)


def _write_lines(home: Home, lines: list[bytes]) -> None:
    entries_path(home).write_bytes(b"".join(lines))


def test_an_edited_entry_is_found(home):
    fill(home)
    lines = _lines(home)
    lines[2] = lines[2].replace(b'"rows":2', b'"rows":9')
    _write_lines(home, lines)
    with pytest.raises(HistoryError, match="at entry 2: bad signature"):
        audit.verify(home)


def test_a_reformatted_entry_is_found(home):
    fill(home)
    lines = _lines(home)
    lines[1] = lines[1].replace(b'"action":', b'"action": ')
    _write_lines(home, lines)
    with pytest.raises(HistoryError, match="at entry 1: the line is not in canonical form"):
        audit.verify(home)


def test_a_deleted_entry_is_found(home):
    fill(home)
    lines = _lines(home)
    del lines[2]
    _write_lines(home, lines)
    with pytest.raises(HistoryError, match="at entry 2: sequence number 3"):
        audit.verify(home)


def test_reordered_entries_are_found(home):
    fill(home)
    lines = _lines(home)
    lines[1], lines[2] = lines[2], lines[1]
    _write_lines(home, lines)
    with pytest.raises(HistoryError, match="at entry 1: sequence number 2"):
        audit.verify(home)


def test_removed_last_entries_are_found_by_the_checkpoint(home):
    fill(home)
    _write_lines(home, _lines(home)[:-2])
    with pytest.raises(HistoryError, match="signs 5 entries; only 3 remain"):
        audit.verify(home)


def test_a_cut_checkpoint_is_found(home):
    fill(home)
    note = checkpoint_path(home).read_bytes()
    checkpoint_path(home).write_bytes(note[: len(note) // 2])
    with pytest.raises(HistoryError, match="checkpoint is unreadable"):
        audit.verify(home)
    checkpoint_path(home).unlink()
    with pytest.raises(HistoryError, match="checkpoint is missing"):
        audit.verify(home)


def test_a_checkpoint_signed_by_another_key_is_found(home, tmp_path):
    fill(home)
    other = create_home(tmp_path / "other", "berlin")
    audit.record(other, "publish", "cli")
    fill(other, 4)
    checkpoint_path(home).write_bytes(checkpoint_path(other).read_bytes())
    with pytest.raises(HistoryError, match="not signed by this node"):
        audit.verify(home)


def test_an_entry_from_another_log_is_found(home, tmp_path):
    other = create_home(tmp_path / "other", "berlin")
    audit.record(other, "publish", "user:mallory")
    fill(home, 2)
    lines = _lines(home)
    _write_lines(home, [_lines(other)[0], *lines[1:]])
    with pytest.raises(HistoryError, match="at entry 0: signed by an unknown key"):
        audit.verify(home)


def test_an_append_after_tampering_records_it(home):
    fill(home)
    _write_lines(home, _lines(home)[:-1])  # hide the last read
    forget_tails()
    entry = audit.record(home, "publish", "cli")
    assert entry["seq"] == 5  # the evidence went first
    found = audit.read(home, action=audit.TAMPER)
    assert [e["seq"] for e in found] == [4]
    assert "signs 5 entries; the log has 4" in found[0]["detail"]["problem"]
    with pytest.raises(HistoryError, match="at entry 4: the node found the log altered"):
        audit.verify(home)


def test_a_crash_between_append_and_checkpoint_is_not_tampering(home):
    fill(home, 3)
    note = checkpoint_path(home).read_bytes()
    audit.record(home, "publish", "cli")
    checkpoint_path(home).write_bytes(note)  # the new checkpoint never landed
    result = audit.verify(home)
    assert result["signed"] == 3 and result["unsigned"] == 1
    checkpoint_path(home).write_bytes(b"")  # written, not flushed, power cut
    forget_tails()
    audit.record(home, "publish", "cli")
    assert audit.read(home, action=audit.TAMPER) == []
    assert audit.verify(home)["signed"] == 5


# -- crashes and the tail kept between appends ---------------------------------------------
def test_a_torn_last_line_is_ignored_then_cut(home):
    fill(home, 3)
    with entries_path(home).open("ab") as handle:
        handle.write(b'{"entry":{"action":"re')
    assert len(audit.read(home)) == 3
    assert audit.verify(home)["torn_bytes"] == len(b'{"entry":{"action":"re')
    entry = audit.record(home, "publish", "cli")
    assert entry["seq"] == 3
    assert entries_path(home).read_bytes().endswith(b"\n")
    result = audit.verify(home)
    assert result["entries"] == 4 and result["torn_bytes"] == 0


def test_a_new_process_uses_tree_json_and_catches_up(home):
    fill(home, 5)
    tree = (home.root / "audit" / "tree.json").read_bytes()
    fill(home, 5)
    (home.root / "audit" / "tree.json").write_bytes(tree)  # stale: 5 entries behind
    forget_tails()
    assert audit.record(home, "publish", "cli")["seq"] == 10
    assert audit.verify(home)["entries"] == 11
    (home.root / "audit" / "tree.json").write_bytes(b"{not json")
    forget_tails()
    assert audit.record(home, "publish", "cli")["seq"] == 11
    (home.root / "audit" / "tree.json").unlink()
    forget_tails()
    assert audit.record(home, "publish", "cli")["seq"] == 12
    assert audit.verify(home)["entries"] == 13
    assert audit.read(home, action=audit.TAMPER) == []


def test_tree_json_is_written_every_so_many_entries_and_a_new_process_reads_the_rest(home):
    from shoal.audit.trail import TREE_EVERY

    tree = home.root / "audit" / "tree.json"
    fill(home, 1)
    first = tree.read_bytes()  # written at the first entry
    fill(home, TREE_EVERY - 1)
    assert tree.read_bytes() == first  # not at every append
    fill(home, 1)
    assert tree.read_bytes() != first
    fill(home, 7)  # the log is now 7 entries past the tree
    forget_tails()
    assert audit.record(home, "publish", "cli")["seq"] == TREE_EVERY + 8
    result = audit.verify(home)
    assert result["entries"] == TREE_EVERY + 9
    assert audit.read(home, action=audit.TAMPER) == []


def test_concurrent_appends_from_threads(home):
    def work(name: str) -> None:
        for i in range(25):
            audit.record(home, "read", f"user:{name}", n=i)

    threads = [threading.Thread(target=work, args=(f"t{k}",)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert audit.verify(home)["entries"] == 200
    seen = [(e["who"], e["detail"]["n"]) for e in audit.read(home)]
    assert sorted(seen) == sorted((f"user:t{k}", i) for k in range(8) for i in range(25))


_WRITER = """
import sys, time
from pathlib import Path
from shoal import audit
from shoal.config import open_home
home = open_home(Path(sys.argv[1]))
audit.read(home)  # imports done, log opened
Path(sys.argv[4]).touch()
while not Path(sys.argv[5]).exists():
    time.sleep(0.005)
for i in range(int(sys.argv[3])):
    audit.record(home, "read", sys.argv[2], n=i)
"""


@pytest.mark.multiprocess
def test_concurrent_appends_from_processes(home, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    go = tmp_path / "go"
    ready = [tmp_path / f"ready-{k}" for k in range(2)]
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(home.root), f"user:p{k}", "60", str(ready[k]), go],
            env=env,
        )
        for k in range(2)
    ]
    wait_until(lambda: all(r.exists() for r in ready), timeout=60, what="writers ready")
    go.touch()
    for i in range(60):  # and this process at the same time, from memory
        audit.record(home, "read", "user:main", n=i)
    assert [w.wait(timeout=120) for w in writers] == [0, 0]
    assert audit.verify(home)["entries"] == 180
    order = [e["who"] for e in audit.read(home)]
    seen = sorted((e["who"], e["detail"]["n"]) for e in audit.read(home))
    names = ("user:main", "user:p0", "user:p1")
    assert seen == sorted((who, i) for who in names for i in range(60))
    switches = sum(1 for a, b in itertools.pairwise(order) if a != b)
    assert switches > 2  # the writers really took turns, not one after another
    assert audit.read(home, action=audit.TAMPER) == []


# -- bounded and hostile input --------------------------------------------------------------
def test_an_oversized_detail_is_cut_and_says_so(home):
    entry = audit.record(home, "read", "user:alice", sql="x" * 1_000_000, rows=3)
    line = _lines(home)[-1]
    assert len(line) <= audit.MAX_ENTRY_BYTES
    assert entry["detail"]["truncated"] is True and entry["detail"]["rows"] == 3
    assert entry["detail"]["sql"].startswith("xxxx")
    assert entry["detail"]["sql"].endswith("more characters]")
    many = {f"field{i}": "v" * 200 for i in range(5000)}
    entry = audit.record(home, "read", "user:alice", **many)
    assert entry["detail"]["truncated"] is True
    assert len(_lines(home)[-1]) <= audit.MAX_ENTRY_BYTES
    wide = audit.record(home, "read", "user:alice", columns=[f"c{i}" * 50 for i in range(10_000)])
    assert len(_lines(home)[-1]) <= audit.MAX_ENTRY_BYTES
    assert wide["detail"]["truncated"] is True
    assert audit.verify(home)["entries"] == 3


class _Evil:
    def __str__(self) -> str:
        raise RuntimeError("no")


def test_hostile_values_are_stored_safely(home):
    cyclic: list[object] = []
    cyclic.append(cyclic)
    entry = audit.record(
        home,
        "refuse",
        "anonymous",
        reason="line\nbreak\r\x00\x1b[31m\u2028end",
        nan=float("nan"),
        inf=-math.inf,
        raw=b"\x00\xff",
        names={"b", "a"},
        path=Path("/etc/passwd"),
        when=datetime(2025, 1, 1, tzinfo=UTC),
        huge=10**40,
        surrogate="bad\udc80name",
        evil=_Evil(),
        cyclic=cyclic,
        nested={1: {"x": [1, 2, {"y": None}]}},
        seq=99,
        node="paris",
    )
    detail = entry["detail"]
    assert detail["reason"] == "line\nbreak\r\x00\x1b[31m\u2028end"
    assert detail["nan"] == "nan" and detail["inf"] == "-inf"
    assert detail["raw"] == "00ff" and detail["names"] == ["a", "b"]
    assert detail["path"] == "/etc/passwd" and detail["when"].startswith("2025-01-01")
    assert detail["huge"] == "<integer of 133 bits>"
    assert detail["surrogate"] == "bad\\udc80name"
    assert detail["evil"] == "<unprintable _Evil>"
    assert "nested deeper" in json.dumps(detail["cyclic"])
    assert detail["nested"] == {"1": {"x": [1, 2, {"y": None}]}}
    assert entry["seq"] == 0 and entry["node"] == "berlin"  # detail cannot pose as them
    assert detail["seq"] == 99 and detail["node"] == "paris"
    assert len(_lines(home)) == 1  # control characters never split a line
    assert audit.read(home) == [entry]
    assert audit.verify(home)["entries"] == 1


@pytest.mark.parametrize(
    ("action", "who", "product", "message"),
    [
        ("read", 42, None, "who must be text, not int"),
        ("read", "", None, "invalid audit who"),
        ("read", "user:a\nuser:b", None, "no control characters"),
        ("read", "user:" + "a" * 300, None, "1-256 characters"),
        ("read", "cli", 7, "product must be text"),
        ("read", "cli", "x\x00", "invalid audit product"),
        ("DROP TABLE", "cli", None, "invalid audit action"),
        ("", "cli", None, "invalid audit action"),
        (None, "cli", None, "invalid audit action"),
        ("a" * 65, "cli", None, "invalid audit action"),
    ],
)
def test_wrong_names_are_refused(home, action, who, product, message):
    with pytest.raises(UsageError, match=message):
        audit.record(home, action, who, product=product)
    assert audit.read(home) == []


# -- as a table -----------------------------------------------------------------------------
def test_as_arrow_and_sql_over_the_table(home):
    fill(home, 4)
    audit.record(home, "publish", "cli", product="berlin.sales", rows="not a number")
    table = audit.as_arrow(home)
    assert table.schema == audit.AUDIT_SCHEMA
    assert table.column("seq").to_pylist() == [0, 1, 2, 3, 4]
    assert table.column("rows").to_pylist() == [0, 1, 2, 3, None]
    assert table.column("columns").to_pylist()[0] == ["sku", "price"]
    assert table.column("fragment").to_pylist()[4] is None
    assert json.loads(table.column("detail").to_pylist()[4]) == {"rows": "not a number"}
    assert table.column("time").type == pa.timestamp("ms", tz="UTC")
    session = LockedSession()
    session.expose({("berlin", "_audit"): audit.audit_table(home)})
    session.lock()
    got = session.run(
        "SELECT who, sum(rows) AS rows FROM berlin._audit WHERE action = 'read' "
        "GROUP BY who ORDER BY who"
    ).read_all()
    assert got.to_pylist() == [{"who": "user:alice", "rows": 4}, {"who": "user:bob", "rows": 2}]


def test_audit_table_follows_appends(home):
    fill(home, 3)
    first = audit.audit_table(home)
    assert audit.audit_table(home) is first  # unchanged file: the same table
    fill(home, 2)
    assert audit.audit_table(home).equals(audit.as_arrow(home))
    with entries_path(home).open("ab") as handle:
        handle.write(b'{"entry":')  # torn: not a row yet
    assert audit.audit_table(home).num_rows == 5
    audit.record(home, "publish", "cli")
    assert audit.audit_table(home).equals(audit.as_arrow(home))
    assert audit.audit_table(home).num_rows == 6


# -- the events layer -----------------------------------------------------------------------
def test_events_are_audit_entries(home):
    event = record_event(
        home, "copy-refused", product="berlin.sales", peer="far", side="source", gone=None
    )
    assert set(event) == {"time", "kind", "product", "peer", "side"}
    assert event["kind"] == "copy-refused" and event["peer"] == "far"
    record_event(home, "file-repaired", file="part-0.parquet", who="node:paris")
    assert read_events(home, "copy-refused") == [event]
    assert [e["file"] for e in read_events(home, "file-repaired")] == ["part-0.parquet"]
    assert [e["kind"] for e in read_events(home)] == ["copy-refused", "file-repaired"]
    assert [e["who"] for e in audit.read(home)] == ["node:berlin", "node:paris"]
    assert not (home.root / "events.jsonl").exists()
    assert audit.verify(home)["entries"] == 2


# -- the command line -----------------------------------------------------------------------
def shoal_audit(home: Home, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "COLUMNS": "200"}
    env.pop("SHOAL_HOME", None)
    return subprocess.run(
        [sys.executable, "-m", "shoal", "audit", "--home", str(home.root), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_cli_lists_filters_and_renders(home):
    fill(home, 4)
    audit.record(home, "publish", "cli", product="berlin.sales", version=2)
    done = shoal_audit(home, "--json")
    assert done.returncode == 0, done.stderr
    assert [e["seq"] for e in json.loads(done.stdout)] == [0, 1, 2, 3, 4]
    done = shoal_audit(home, "--json", "--who", "user:alice", "--since", "1h", "--last", "1")
    assert [(e["who"], e["seq"]) for e in json.loads(done.stdout)] == [("user:alice", 3)]
    done = shoal_audit(home, "--action", "publish", "--node", "berlin")
    assert done.returncode == 0, done.stderr
    assert "publish" in done.stdout and "version=2" in done.stdout
    assert "user:alice" not in done.stdout and "(1 entry)" in done.stdout


def test_cli_refuses_bad_options(home):
    done = shoal_audit(home, "--since", "yesterday")
    assert done.returncode == 2
    assert "--since: invalid time 'yesterday'" in done.stderr
    assert "Traceback" not in done.stderr
    done = shoal_audit(home, "--verify", "--node", "paris")
    assert done.returncode == 2 and "--verify checks this home" in done.stderr
    done = shoal_audit(home, "--node", "paris")
    assert done.returncode == 4
    assert "node 'paris' does not show its audit log" in done.stderr


def test_cli_verify(home):
    fill(home, 3)
    done = shoal_audit(home, "--verify")
    assert done.returncode == 0, done.stderr
    assert "audit log of node 'berlin' verifies: 3 entries" in done.stdout
    assert "berlin/_audit\n3\n" in done.stdout
    lines = _lines(home)
    lines[1] = lines[1].replace(b"user:alice", b"user:eve!!")
    _write_lines(home, lines)
    done = shoal_audit(home, "--verify", "--json")
    assert done.returncode == 7
    assert "berlin._audit: history does not verify at entry 1: bad signature" in done.stderr
