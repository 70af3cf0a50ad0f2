"""The signed log: canonical entries, signed-note checkpoints, forks and rollbacks."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.crypto import generate_key, verify
from shoal.log import (
    ENTRY_VERSION,
    Checkpoint,
    FileRef,
    HistoryError,
    LogEntry,
    ProductLog,
    canonical_json,
    check_chain,
    note_key_hash,
)
from shoal.merkle import ProofError, leaf_hash, verify_inclusion


def entry(seq, prev="", key=None, **changes):
    base = dict(
        kind=ENTRY_VERSION,
        product="sales",
        seq=seq,
        version=seq + 1,
        delta_version=seq,
        files_added=(FileRef(f"part-{seq}.parquet", "ab" * 32, 100),),
        files_removed=(),
        commit_sha256="cd" * 32,
        schema_sha256="ef" * 32,
        contract_sha256="01" * 32,
        rows_added=10,
        rows_removed=0,
        time="2026-11-24T00:00:00.000+00:00",
        key_id=(key or KEY).key_id,
        prev=prev,
    )
    base.update(changes)
    return LogEntry(**base)


KEY = generate_key()


def build(tmp_path, n, key=KEY):
    log = ProductLog(tmp_path / "log", "berlin/sales")
    prev = ""
    for seq in range(n):
        e = entry(seq, prev, key)
        log.append(e, key)
        prev = e.leaf_hash().hex()
    log.sign_checkpoint(key, "berlin")
    return log


def test_canonical_json_is_sorted_and_compact():
    assert canonical_json({"b": 1, "a": "ü"}) == '{"a":"ü","b":1}'.encode()


def test_entries_round_trip_and_chain_verifies(tmp_path):
    log = build(tmp_path, 5)
    assert [e.seq for e in log.entries()] == list(range(5))
    assert check_chain("x", log.read(), {KEY.key_id: KEY.public_bytes}) == KEY.public_bytes


def test_checkpoint_is_a_signed_note(tmp_path):
    log = build(tmp_path, 3)
    note = log.checkpoint_path.read_text()
    lines = note.split("\n")
    assert lines[0] == "berlin/sales"
    assert lines[1] == "3"
    assert base64.b64decode(lines[2]) == log.root()
    assert lines[3] == ""
    assert lines[4].startswith("\u2014 berlin ")
    sig = base64.b64decode(lines[4].split(" ")[2])
    assert sig[:4] == note_key_hash("berlin", KEY.public_bytes)
    parsed = Checkpoint.parse(note)
    assert parsed.verify(KEY.public, KEY.public_bytes)
    other = generate_key()
    assert not parsed.verify(other.public, other.public_bytes)


@pytest.mark.parametrize(
    "note",
    [
        "",
        "berlin/sales\n3\n",
        "berlin/sales\nthree\nAAAA\n\n\u2014 berlin AAAA\n",
        "berlin/sales\n03\n" + base64.b64encode(b"x" * 32).decode() + "\n\n\u2014 b AAAA\n",
        "berlin/sales\n3\nnot base64!\n\n\u2014 berlin AAAA\n",
        "berlin/sales\n3\n" + base64.b64encode(b"short").decode() + "\n\n\u2014 berlin AAAA\n",
        "berlin/sales\n3\n" + base64.b64encode(b"x" * 32).decode() + "\n\nno signature\n",
    ],
)
def test_malformed_checkpoints_are_refused(note):
    with pytest.raises(ValueError):
        Checkpoint.parse(note)


def test_flipping_a_bit_of_a_checkpoint_signature_fails(tmp_path):
    log = build(tmp_path, 2)
    cp = log.checkpoint()
    for index in range(len(cp.signature)):
        sig = bytearray(cp.signature)
        sig[index] ^= 1
        bad = Checkpoint(cp.origin, cp.size, cp.root, cp.signer, bytes(sig))
        assert not bad.verify(KEY.public, KEY.public_bytes)


def test_never_signs_two_roots_for_one_size(tmp_path):
    log = build(tmp_path, 2)
    lines = log.entries_path.read_bytes().splitlines(keepends=True)
    altered = entry(1, log.entries()[0].leaf_hash().hex(), rows_added=999)
    log.entries_path.write_bytes(lines[0])
    log.append(altered, KEY)
    with pytest.raises(HistoryError, match="fork"):
        log.sign_checkpoint(KEY, "berlin")


def test_never_signs_below_a_signed_size(tmp_path):
    log = build(tmp_path, 3)
    lines = log.entries_path.read_bytes().splitlines(keepends=True)
    log.entries_path.write_bytes(b"".join(lines[:2]))
    with pytest.raises(HistoryError, match="below"):
        log.sign_checkpoint(KEY, "berlin")


def test_altered_and_resigned_old_entry_breaks_the_link(tmp_path):
    log = build(tmp_path, 3)
    records = log.read()
    forged = entry(0, rows_added=12345)
    sig = KEY.sign(forged.encode())  # re-signed with the real key
    tampered = [(forged, sig), *records[1:]]
    with pytest.raises(HistoryError, match="broken link") as info:
        check_chain("berlin/sales", tampered, {KEY.key_id: KEY.public_bytes})
    assert info.value.seq == 1


def test_entry_signed_by_unknown_key(tmp_path):
    log = build(tmp_path, 2)
    records = log.read()
    stranger = generate_key()
    last = entry(2, records[-1][0].leaf_hash().hex(), stranger)
    with pytest.raises(HistoryError, match="unknown key") as info:
        check_chain(
            "x", [*records, (last, stranger.sign(last.encode()))], {KEY.key_id: KEY.public_bytes}
        )
    assert info.value.seq == 2


def test_bad_signature(tmp_path):
    log = build(tmp_path, 2)
    records = log.read()
    first, sig = records[0]
    broken = bytes([sig[0] ^ 1]) + sig[1:]
    with pytest.raises(HistoryError, match="bad signature"):
        check_chain("x", [(first, broken), records[1]], {KEY.key_id: KEY.public_bytes})


def test_rollback_and_fork_are_detected_against_a_saved_checkpoint(tmp_path):
    log = build(tmp_path, 4)
    saved = log.checkpoint()
    other = build(tmp_path / "other", 2)
    with pytest.raises(HistoryError, match="rolled back"):
        other_log = ProductLog(other.directory, "berlin/sales")
        other_log.check_extends(saved)
    forked = ProductLog(tmp_path / "fork" / "log", "berlin/sales")
    prev = ""
    for seq in range(5):
        e = entry(seq, prev, rows_added=seq + 100)
        forked.append(e, KEY)
        prev = e.leaf_hash().hex()
    with pytest.raises(HistoryError, match="forked"):
        forked.check_extends(saved)
    log.append(entry(4, log.entries()[-1].leaf_hash().hex()), KEY)
    log.check_extends(saved)


def test_torn_last_line_is_ignored_and_repaired(tmp_path):
    log = build(tmp_path, 2)
    with log.entries_path.open("ab") as handle:
        handle.write(b'{"entry": {"kind"')
    assert log.size() == 2
    log.repair()
    assert log.entries_path.read_bytes().endswith(b"\n")
    assert log.size() == 2


def test_two_checkpoints_of_one_size_with_different_roots_are_a_fork(tmp_path):
    log = build(tmp_path, 3)
    honest = log.checkpoint()
    other = ProductLog(tmp_path / "other" / "log", "berlin/sales")
    prev = ""
    for seq in range(3):
        e = entry(seq, prev, rows_added=77)
        other.append(e, KEY)
        prev = e.leaf_hash().hex()
    forged = other.sign_checkpoint(KEY, "berlin")
    assert forged.size == honest.size and forged.root != honest.root
    with pytest.raises(HistoryError, match="forked"):
        log.check_extends(forged)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 12),
    st.data(),
)
def test_any_bit_flip_in_an_entry_or_its_signature_fails(tmp_path_factory, n, data):
    log = build(tmp_path_factory.mktemp("log"), n)
    records = log.read()
    root = log.root()
    seq = data.draw(st.integers(0, n - 1))
    target, signature = records[seq]
    encoded = bytearray(target.encode())
    bit = data.draw(st.integers(0, len(encoded) * 8 - 1))
    encoded[bit // 8] ^= 1 << (bit % 8)
    # The flipped entry no longer matches its signature, nor the tree's root.
    assert not verify(KEY.public, signature, bytes(encoded))
    proof = log.inclusion(seq)
    with pytest.raises(ProofError):
        verify_inclusion(leaf_hash(bytes(encoded)), seq, n, proof, root)
    sig_bit = data.draw(st.integers(0, len(signature) * 8 - 1))
    flipped = bytearray(signature)
    flipped[sig_bit // 8] ^= 1 << (sig_bit % 8)
    with pytest.raises(HistoryError):
        check_chain(
            "x",
            [*records[:seq], (target, bytes(flipped)), *records[seq + 1 :]],
            {KEY.key_id: KEY.public_bytes},
        )


def test_tree_cache_is_rebuilt_when_it_disagrees_with_the_log(tmp_path):
    log = build(tmp_path, 5)
    want = log.root()
    assert log.frontier()[0].root() == want
    wrong_leaf = '{"size": 5, "last_leaf": "00", "nodes": [[5, "00"]], "roots": {}}'
    log.state_path.write_text(wrong_leaf)
    assert log.frontier()[0].root() == want
    log.state_path.write_text('{"size": 4, "last_leaf": "", "nodes": [], "roots": {}}')
    assert log.frontier()[0].root() == want
    log.state_path.write_text("garbage")
    assert log.frontier()[0].root() == want


def test_an_entry_that_does_not_extend_the_log_is_refused(tmp_path):
    log = build(tmp_path, 2)
    with pytest.raises(HistoryError, match="does not extend"):
        log.append(entry(2, prev="00" * 32), KEY)
    with pytest.raises(HistoryError, match="does not extend"):
        log.append(entry(5, log.entries()[-1].leaf_hash().hex()), KEY)
    assert log.size() == 2


def test_lines_are_canonical_json_of_entry_and_signature(tmp_path):
    log = build(tmp_path, 2)
    for line in log.entries_path.read_bytes().splitlines():
        record = json.loads(line)
        assert canonical_json(record) == line


def test_state_kept_between_uses_notices_changes_made_elsewhere(tmp_path):
    states: dict = {}
    log = ProductLog(tmp_path / "log", "berlin/sales", states)
    prev = ""
    for seq in range(3):
        e = entry(seq, prev)
        log.append(e, KEY)
        prev = e.leaf_hash().hex()
    log.sign_checkpoint(KEY, "berlin")
    elsewhere = ProductLog(tmp_path / "log", "berlin/sales")  # another process, say
    e = entry(3, prev)
    elsewhere.append(e, KEY)
    elsewhere.sign_checkpoint(KEY, "berlin")
    assert log.state().size == 4
    log.append(entry(4, e.leaf_hash().hex()), KEY)
    assert log.sign_checkpoint(KEY, "berlin").root == ProductLog(log.directory, "x").root()


def test_a_long_last_line_is_found_from_the_end(tmp_path):
    log = build(tmp_path, 1)
    big = entry(
        1,
        log.entries()[0].leaf_hash().hex(),
        files_added=tuple(FileRef(f"part-{i:06d}.parquet", "ab" * 32, i) for i in range(2000)),
    )
    log.append(big, KEY)
    assert len(log.entries_path.read_bytes()) > 1 << 17
    fresh = ProductLog(log.directory, "berlin/sales")
    assert fresh.load().last == big
    assert fresh.last_entry() == big
