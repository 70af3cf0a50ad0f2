"""Each publish lands in the signed log; verify finds every kind of tampering; recovery."""

from __future__ import annotations

import base64
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from shoal.cli import app
from shoal.log import HistoryError, LogEntry, canonical_json
from shoal.merkle import verify_inclusion
from shoal.node import Node
from shoal.products.history import ProductHistory

ROWS = {"id": [1, 2, 3], "amount": [1.0, 2.0, 3.5]}


@pytest.fixture
def published(node, write_parquet):
    node.publish("sales", str(write_parquet(ROWS)))
    node.publish("sales", str(write_parquet({"id": [4], "amount": [9.0]})))
    node.publish(
        "sales", str(write_parquet({"id": [2], "amount": [7.0]})), mode="upsert", key=["id"]
    )
    return node


def history(node):
    return ProductHistory(node.products, "sales")


def data_files(node):
    return sorted((node.products.table_dir("sales")).glob("*.parquet"))


def test_every_publish_is_one_log_entry_with_a_checkpoint(published):
    log = history(published).log
    entries = log.entries()
    assert [e.version for e in entries] == [1, 2, 3]
    assert [e.delta_version for e in entries] == [0, 1, 2]
    assert entries[0].rows_added == 3
    assert entries[2].rows_removed == 1
    assert entries[1].prev == entries[0].leaf_hash().hex()
    assert log.checkpoint().size == 3
    summary = published.verify("sales")[0]
    assert summary["entries"] == 3


def test_a_changed_byte_is_found(published):
    victim = data_files(published)[0]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    with pytest.raises(HistoryError, match="file changed"):
        published.verify("sales")


def test_a_missing_file_is_found(published):
    live = published.products.table("sales").file_uris()
    (published.products.table_dir("sales") / live[0].rsplit("/", 1)[-1]).unlink()
    with pytest.raises(HistoryError, match="file missing"):
        published.verify("sales")


def test_an_unknown_file_in_a_version_is_found(published, tmp_path):
    h = history(published)
    commit = h.commit_path(1)
    lines = commit.read_text().splitlines()
    extra = json.loads(next(line for line in lines if '"add"' in line))
    extra["add"]["path"] = "smuggled.parquet"
    pq.write_table(pa.table(ROWS), h.table_dir / "smuggled.parquet")
    commit.write_text("\n".join([*lines, json.dumps(extra)]) + "\n")
    with pytest.raises(HistoryError, match="commit file was changed"):
        published.verify("sales")


def test_a_file_dropped_into_the_table_is_found(published):
    stray = published.products.table_dir("sales") / "part-00000-extra.parquet"
    pq.write_table(pa.table(ROWS), stray)
    with pytest.raises(HistoryError, match=r"unknown file present: part-00000-extra\.parquet"):
        published.verify("sales")


def test_a_rewritten_version_with_a_resigned_entry_breaks_the_link(published):
    h = history(published)
    lines = h.log.entries_path.read_text().splitlines()
    record = json.loads(lines[0])
    record["entry"]["rows_added"] = 999
    key = published.home.key()
    forged = LogEntry.from_body(record["entry"])
    record = {
        "entry": forged.body(),
        "signature": base64.b64encode(key.sign(forged.encode())).decode(),
    }
    lines[0] = canonical_json(record).decode()
    h.log.entries_path.write_text("\n".join(lines) + "\n")
    with pytest.raises(HistoryError, match="broken link") as info:
        published.verify("sales")
    assert info.value.seq == 1


def test_a_bad_signature_is_found(published):
    h = history(published)
    lines = h.log.entries_path.read_text().splitlines()
    record = json.loads(lines[1])
    record["entry"]["time"] = "2000-01-01T00:00:00.000+00:00"
    lines[1] = json.dumps(record, separators=(",", ":"), sort_keys=True)
    h.log.entries_path.write_text("\n".join(lines) + "\n")
    with pytest.raises(HistoryError, match="bad signature") as info:
        published.verify("sales")
    assert info.value.seq == 1


def test_a_checkpoint_that_does_not_match_is_found(published):
    h = history(published)
    lines = h.log.checkpoint_path.read_text().split("\n")
    lines[2] = base64.b64encode(b"\x07" * 32).decode()
    h.log.checkpoint_path.write_text("\n".join(lines))
    with pytest.raises(HistoryError, match="checkpoint does not match"):
        published.verify("sales")


def test_a_log_rolled_back_by_one_entry_is_found(published):
    h = history(published)
    lines = h.log.entries_path.read_text().splitlines(keepends=True)
    h.log.entries_path.write_text("".join(lines[:2]))
    with pytest.raises(HistoryError, match="not in the signed log"):
        published.verify("sales")


def test_an_unlogged_delta_commit_is_found(published, write_parquet):
    from deltalake import write_deltalake

    table = published.products.table("sales")
    write_deltalake(table, pa.table({"id": [99], "amount": [0.0]}), mode="append")
    with pytest.raises(HistoryError, match="not in the signed log"):
        published.verify("sales")
    # A publish does not launder the foreign commit into the log either.
    published.publish("sales", str(write_parquet({"id": [5], "amount": [1.0]})))
    with pytest.raises(HistoryError, match="not in the signed log"):
        published.verify("sales")


def test_commit_without_its_log_entry_is_completed_on_next_lock(node, write_parquet, monkeypatch):
    node.publish("sales", str(write_parquet(ROWS)))
    original = ProductHistory.catch_up
    calls = {"n": 0}

    def crash_after_commit(self, key):
        calls["n"] += 1
        if calls["n"] == 1:  # the call right after the Delta commit
            raise KeyboardInterrupt("simulated crash after the commit")
        return original(self, key)

    monkeypatch.setattr(ProductHistory, "catch_up", crash_after_commit)
    with pytest.raises(KeyboardInterrupt):
        node.publish("sales", str(write_parquet({"id": [4], "amount": [1.0]})))
    monkeypatch.setattr(ProductHistory, "catch_up", original)
    with pytest.raises(HistoryError, match="not in the signed log"):
        node.verify("sales")  # verify only reads: the interrupted publish shows
    reopened = Node.open(node.home.root)  # opening the node completes it
    assert [s["entries"] for s in reopened.verify("sales")] == [2]
    assert reopened.describe("sales").rows == 4
    reopened.publish("sales", str(write_parquet({"id": [5], "amount": [1.0]})))
    assert [s["entries"] for s in reopened.verify("sales")] == [3]


def test_files_of_a_publish_that_died_before_its_commit_are_removed(published):
    table_dir = published.products.table_dir("sales")
    orphan = table_dir / "part-99999-dead.parquet"
    history(published).begin()
    orphan.write_bytes(b"half a file")
    Node.open(published.home.root)
    assert not orphan.exists()
    assert not history(published).marker_path.exists()
    assert [s["entries"] for s in published.verify("sales")] == [3]


def test_key_rotation_keeps_history_verifiable(published, write_parquet):
    old = published.home.key().key_id
    before = published.checkpoint("sales")
    old_id, new_id = published.rotate_key()
    assert old_id == old and new_id != old
    published.publish("sales", str(write_parquet({"id": [7], "amount": [1.0]})))
    entries = history(published).log.entries()
    assert entries[3].kind == "key-rotation" and entries[3].key_id == old
    assert entries[4].key_id == new_id
    published.verify("sales")
    saved = published.home.root / "cp"
    saved.write_text(before)
    published.verify_against("sales", before)


def test_cli_verify_log_checkpoint_proof(published, tmp_path):
    runner = CliRunner()
    home = ["--home", str(published.home.root)]
    ok = runner.invoke(app, ["verify", *home])
    assert ok.exit_code == 0, ok.output
    assert "berlin.sales: ok, 3 entries" in ok.output
    entries = json.loads(
        runner.invoke(app, ["log", "sales", "--json", "--from", "1", *home]).output
    )
    assert [e["seq"] for e in entries] == [1, 2]
    note = runner.invoke(app, ["checkpoint", "sales", *home]).output
    assert note.startswith("berlin/sales\n3\n")
    saved = tmp_path / "cp.txt"
    saved.write_text(note)
    against = runner.invoke(app, ["verify", "sales", "--against", str(saved), *home])
    assert against.exit_code == 0, against.output
    proof = json.loads(runner.invoke(app, ["proof", "sales", "--version", "2", *home]).output)
    verify_inclusion(
        base64.b64decode(proof["leaf_hash"]),
        proof["seq"],
        proof["tree_size"],
        [base64.b64decode(p) for p in proof["proof"]],
        base64.b64decode(proof["root"]),
    )
    data_files(published)[0].write_bytes(b"tampered")
    bad = runner.invoke(app, ["verify", *home])
    assert bad.exit_code == 7
    assert "version" in bad.output and "Traceback" not in bad.output
    garbage = tmp_path / "garbage.txt"
    garbage.write_text("not a checkpoint")
    assert runner.invoke(app, ["verify", "sales", "--against", str(garbage), *home]).exit_code == 2
    assert runner.invoke(app, ["proof", "sales", "--version", "99", *home]).exit_code == 4


def test_checkpoint_from_another_node_is_refused(published, tmp_path):
    other = Node.init(tmp_path / "other", "berlin")
    other.publish("sales", str(data_files(published)[0]))
    with pytest.raises(HistoryError, match="not signed by this node"):
        published.verify_against("sales", other.checkpoint("sales"))


def _crash_after_commit(monkeypatch):
    def crash(self, key):
        raise KeyboardInterrupt("simulated crash after the commit")

    monkeypatch.setattr(ProductHistory, "record", crash)


def test_a_publish_leaves_no_marker_and_announces_in_the_commit(published):
    h = history(published)
    assert not h.marker_path.exists()
    info = next(a["commitInfo"] for a in h.read_commit(2) if "commitInfo" in a)
    announcement = json.loads(info["shoal.announcement"])
    assert announcement["prev"] == h.log.entries()[1].leaf_hash().hex()
    assert announcement["files"] == {}  # an upsert: the merge writes its own files
    info = next(a["commitInfo"] for a in h.read_commit(1) if "commitInfo" in a)
    appended = json.loads(info["shoal.announcement"])["files"]
    assert appended == {f.path: f.sha256 for f in h.log.entries()[1].files_added}


def test_a_commit_announced_with_a_key_the_node_never_had_is_not_logged(
    node, write_parquet, monkeypatch
):
    from shoal.crypto import generate_key

    node.publish("sales", str(write_parquet(ROWS)))
    stranger = generate_key()
    original = ProductHistory.announce
    monkeypatch.setattr(
        ProductHistory, "announce", lambda self, v, files, key: original(self, v, files, stranger)
    )
    _crash_after_commit(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        node.publish("sales", str(write_parquet({"id": [4], "amount": [1.0]})))
    monkeypatch.undo()
    reopened = Node.open(node.home.root)
    with pytest.raises(HistoryError, match="not in the signed log"):
        reopened.verify("sales")


def test_a_crashed_publish_of_an_earlier_version_is_completed_from_pending_json(
    node, write_parquet, monkeypatch
):
    node.publish("sales", str(write_parquet(ROWS)))
    monkeypatch.setattr(ProductHistory, "announce", lambda *a, **k: {})  # as Shoal 0.1 did
    _crash_after_commit(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        node.publish("sales", str(write_parquet({"id": [4], "amount": [1.0]})))
    monkeypatch.undo()
    h = history(node)
    h.marker_path.unlink()
    h.legacy_pending_path.write_text(json.dumps({"version": 2, "files": {}}))
    reopened = Node.open(node.home.root)
    assert [s["entries"] for s in reopened.verify("sales")] == [2]
    assert not h.legacy_pending_path.exists()


def test_a_commit_without_any_announcement_is_not_logged_after_a_crash(
    node, write_parquet, monkeypatch
):
    node.publish("sales", str(write_parquet(ROWS)))
    monkeypatch.setattr(ProductHistory, "announce", lambda *a, **k: {})
    _crash_after_commit(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        node.publish("sales", str(write_parquet({"id": [4], "amount": [1.0]})))
    monkeypatch.undo()
    reopened = Node.open(node.home.root)
    assert not history(node).marker_path.exists()
    with pytest.raises(HistoryError, match="not in the signed log"):
        reopened.verify("sales")


def test_publishes_by_two_node_objects_on_one_home_keep_one_history(node, write_parquet):
    other = Node.open(node.home.root)
    for i in range(3):
        node.publish("sales", str(write_parquet({"id": [i], "amount": [1.0]})))
        other.publish("sales", str(write_parquet({"id": [10 + i], "amount": [2.0]})))
    assert [s["entries"] for s in node.verify("sales")] == [6]
    assert [e.seq for e in history(node).log.entries()] == list(range(6))


def test_an_unreadable_log_refuses_a_publish_and_still_lets_the_node_open(published, write_parquet):
    h = history(published)
    with h.log.entries_path.open("ab") as handle:
        handle.write(b"not json at all\n")
    with pytest.raises(HistoryError, match="unreadable"):
        published.publish("sales", str(write_parquet({"id": [8], "amount": [1.0]})))
    assert not h.marker_path.exists()
    reopened = Node.open(published.home.root)
    with pytest.raises(HistoryError, match="unreadable"):
        reopened.verify("sales")
