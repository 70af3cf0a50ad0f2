"""Placement, announcements of what a node holds, and the checks a replica makes on what a
holder sends, on real node homes (no network: the holder's answer is made by its own code).
"""

from __future__ import annotations

import json
from pathlib import Path

import jwt
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import shoal.products.replicas as replicas_module
from shoal.contracts import Contract, dump_contract
from shoal.errors import NotFoundError, RefusedError, TokenError, UnavailableError, UsageError
from shoal.events import read_events
from shoal.log import Checkpoint, HistoryError
from shoal.merkle import root_from_leaf_hashes
from shoal.mesh.invites import Invites
from shoal.mesh.placement import choose_holders, residency_of
from shoal.mesh.replication import residency_of_text, verify_answer
from shoal.mesh.tokens import read_announcement, sign_announcement
from shoal.node import Node
from shoal.policy import Principal
from shoal.products.replicas import PulledVersions, ReplicaStore, commit_path, live_files
from tests.contracts.util import make_contract


def _contract(residency: object | None) -> Contract:
    columns = [{"name": "id", "logicalType": "integer", "physicalType": "int64"}]
    top = (
        {}
        if residency is None
        else {"customProperties": [{"property": "residency", "value": residency}]}
    )
    return make_contract(columns, **top)


# -- placement ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "allowed", "refused"),
    [
        (None, ["eu-de"], ["eu-fr", "us-ca"]),
        ("eu-fr", ["eu-fr"], ["eu-de"]),
        (["eu-de", "EU-FR"], ["eu-de", "eu-fr"], ["us-ca"]),
        ("any", ["eu-de", "us-ca", "ap-jp"], []),
        (["eu-de", "any"], ["us-ca"], []),
    ],
)
def test_residency_comes_from_the_contract(value, allowed, refused):
    residency = residency_of(_contract(value), "eu-de")
    assert all(residency.allows(region) for region in allowed)
    assert not any(residency.allows(region) for region in refused)


@pytest.mark.parametrize("value", [[], 7, [1, 2], {"a": 1}])
def test_a_malformed_residency_is_a_clear_error(value):
    with pytest.raises(UsageError, match="residency must be a region"):
        residency_of(_contract(value), "eu-de")


def test_the_residency_of_a_contract_text_is_parsed_once_and_follows_its_text():
    # Every replication round asks for every product's rule: the parse is kept per text.
    residency_of_text.cache_clear()
    only_fr, anywhere = dump_contract(_contract("eu-fr")), dump_contract(_contract("any"))
    first = residency_of_text(only_fr, "eu-de")
    again = residency_of_text(only_fr, "eu-de")
    assert again is first and residency_of_text.cache_info().hits == 1
    assert not first.allows("eu-de") and first.allows("eu-fr")
    # A changed contract (or owner region) is a new key, never the old answer.
    assert residency_of_text(anywhere, "eu-de").allows("us-ca")
    assert residency_of_text(dump_contract(_contract(None)), "us-ca").allows("us-ca")
    with pytest.raises(UsageError):
        residency_of_text("apiVersion: [", "eu-de")
    with pytest.raises(UsageError):  # an unreadable contract is refused every time
        residency_of_text("apiVersion: [", "eu-de")


def test_rendezvous_choice_is_stable_and_moves_little():
    nodes = [f"store{i}" for i in range(20)]
    chosen = choose_holders("hq.sales", nodes, 3)
    assert chosen == choose_holders("hq.sales", list(reversed(nodes)), 3)
    assert len(set(chosen)) == 3
    # One node leaving moves only the copy it held; one joining takes at most one.
    gone = chosen[1]
    after = choose_holders("hq.sales", [n for n in nodes if n != gone], 3)
    assert set(chosen) - {gone} <= set(after)
    joined = choose_holders("hq.sales", [*nodes, "newcomer"], 3)
    assert len(set(joined) - set(chosen)) <= 1
    # Different products spread over different nodes; fewer nodes than wanted gives all.
    spread = {n for i in range(30) for n in choose_holders(f"hq.p{i}", nodes, 1)}
    assert len(spread) > 5
    assert sorted(choose_holders("hq.sales", nodes[:2], 3)) == nodes[:2]
    with pytest.raises(UsageError):
        choose_holders("hq.sales", nodes, 17)


# -- announcements ------------------------------------------------------------------------
def test_announcements_carry_what_a_node_holds(tmp_path):
    node = Node.init(tmp_path / "b", "b", "eu-de")
    key = node.home.key()
    made = sign_announcement(key, "b", "http://x", "grpc://x", {"a.sales": (3, 2, 3)})
    read = read_announcement(made.token, key.public)
    assert dict(read.holds) == {"a.sales": (3, 2, 3)}


@pytest.mark.parametrize(
    "holds",
    [
        {"../etc.passwd": [1, 1, 1]},
        {"a.sales": [1, -1, 1]},
        {"a.sales": [1, 1]},
        {"a.sales": ["1", 1, 1]},
        {"nodot": [1, 1, 1]},
        ["a.sales"],
    ],
)
def test_hostile_holds_make_the_announcement_invalid(tmp_path, holds):
    node = Node.init(tmp_path / "b", "b", "eu-de")
    key = node.home.key()
    token = jwt.encode(
        {
            "typ": "announcement",
            "iss": "b",
            "http": "",
            "flight": "",
            "at": 1.0,
            "holds": holds,
        },
        key.private_key,
        algorithm="EdDSA",
        headers={"kid": key.key_id},
    )
    with pytest.raises(TokenError):
        read_announcement(token, key.public)


# -- what a replica checks ----------------------------------------------------------------
@pytest.fixture
def owner(tmp_path) -> Node:
    node = Node.init(tmp_path / "a", "a", "eu-de")
    node.membership.found()
    for index in range(3):
        path = tmp_path / f"v{index}.parquet"
        pq.write_table(pa.table({"id": list(range(index * 10, index * 10 + 10))}), path)
        node.publish("sales", str(path))
    return node


def _answer(owner: Node, since: int) -> dict:
    return owner.replication_source.log_since("a", "a", "sales", since)


def _local(owner: Node, size: int):
    records = owner._history("sales").log.read()[:size]
    root = root_from_leaf_hashes([e.leaf_hash() for e, _ in records])
    checkpoint = Checkpoint.sign("a/sales", size, root, "a", owner.home.key()) if size else None
    return records, checkpoint


def test_a_holders_answer_verifies_from_any_size(owner):
    key = owner.home.key().public_bytes
    for size in range(4):
        records, checkpoint = _local(owner, size)
        entries, lines, note = verify_answer(
            "a/sales", key, records, checkpoint, _answer(owner, size)
        )
        assert [e.seq for e in entries] == list(range(size, 3))
        assert note.size == 3 and len(lines) == 3 - size


def test_rollback_fork_rewrite_and_forgery_are_refused(owner, tmp_path):
    key = owner.home.key().public_bytes
    records, checkpoint = _local(owner, 2)
    # Rolled back: the holder offers fewer entries than the replica holds.
    small = _answer(owner, 1)
    small["checkpoint"] = _local_checkpoint_note(owner, 1)
    small["entries"] = []
    with pytest.raises(HistoryError, match="rollback"):
        verify_answer("a/sales", key, records, checkpoint, small)
    # Rewritten: an entry changed (its signature no longer matches, or its link breaks).
    answer = _answer(owner, 2)
    line = json.loads(answer["entries"][0])
    line["entry"]["rows_added"] += 1
    answer["entries"][0] = json.dumps(line)
    with pytest.raises(HistoryError, match="bad signature"):
        verify_answer("a/sales", key, records, checkpoint, answer)
    # A different history signed by another key (a forged owner).
    other = Node.init(tmp_path / "x", "a", "eu-de")
    other.membership.found()
    pq.write_table(pa.table({"id": [1]}), tmp_path / "x.parquet")
    other.publish("sales", str(tmp_path / "x.parquet"))
    forged = other.replication_source.log_since("a", "a", "sales", 0)
    with pytest.raises(HistoryError, match="unknown key"):
        verify_answer("a/sales", key, [], None, forged)
    # A checkpoint for another product.
    wrong = _answer(owner, 2)
    wrong["checkpoint"] = wrong["checkpoint"].replace("a/sales", "a/other", 1)
    with pytest.raises(HistoryError):
        verify_answer("a/sales", key, records, checkpoint, wrong)
    # A tampered consistency proof.
    tampered = _answer(owner, 2)
    tampered["proof"] = ["00" * 32 for _ in tampered["proof"]] or ["00" * 32]
    with pytest.raises(HistoryError, match="does not extend"):
        verify_answer("a/sales", key, records, checkpoint, tampered)


@pytest.mark.parametrize(
    "broken",
    [
        {"checkpoint": ""},
        {"checkpoint": "nonsense", "entries": []},
        {"checkpoint": None, "entries": []},
        {"entries": "x"},
        {"entries": [1, 2]},
        {"entries": ["{not json"]},
        {"proof": ["zz"]},
    ],
)
def test_malformed_answers_are_refused(owner, broken):
    answer = _answer(owner, 0) | broken
    with pytest.raises(HistoryError):
        verify_answer("a/sales", owner.home.key().public_bytes, [], None, answer)


def _local_checkpoint_note(owner: Node, size: int) -> str:
    _, checkpoint = _local(owner, size)
    assert checkpoint is not None
    return checkpoint.note()


def test_serving_refuses_other_regions_and_unknown_files(owner, tmp_path):
    token, _ = Invites(owner.home, owner.membership).issue("far", "us-ca", 3600)
    far = Node.init(tmp_path / "far", "far", "us-ca")
    admission = Invites(owner.home, owner.membership).redeem(token, far.home.key().public_bytes)
    far.membership.adopt(admission.hub, admission.hub_key, admission.members)
    with pytest.raises(RefusedError, match="may only be stored in eu-de"):
        owner.replication_source.log_since("far", "a", "sales", 0)
    assert read_events(owner.home, "copy-refused")[-1]["peer"] == "far"
    source = owner.replication_source
    for hostile in ("../keys/node.key", "/etc/passwd", "", "_delta_log/x.json"):
        with pytest.raises(NotFoundError):
            source.file("a", "a", "sales", hostile)
    with pytest.raises(UsageError):
        source.log_since("a", "a", "../x", 0)


# -- putting a copy in place --------------------------------------------------------------
def _staged(owner: Node, store: ReplicaStore, since: int) -> PulledVersions:
    key = owner.home.key().public_bytes
    records = store.log("a", "sales").read()
    checkpoint = store.checkpoint("a", "sales")
    entries, lines, note = verify_answer("a/sales", key, records, checkpoint, _answer(owner, since))
    incoming = store.incoming("a", "sales")
    table = owner.products.table_dir("sales")
    commits, files = {}, {}
    for entry in entries:
        source = table / commit_path(entry.delta_version)
        commits[entry.delta_version] = _copy(source, incoming / f"c{entry.delta_version}")
    for path in live_files([e for e, _ in records] + entries):
        if not (store.table_dir("a", "sales") / path).exists():
            files[path] = _copy(table / path, incoming / path)
    return PulledVersions(note, tuple(lines), tuple(entries), commits, files, "contract: x\n")


def _copy(source: Path, target: Path) -> Path:
    target.write_bytes(source.read_bytes())
    return target


def test_a_copy_that_died_halfway_is_cut_back_to_its_checkpoint(owner, tmp_path, monkeypatch):
    replica = Node.init(tmp_path / "b", "b", "eu-de")
    store = replica.replicas
    history = owner._history("sales").log.read()
    # Version 1 only: as if the owner had just one version when the copy began.
    answer = _answer(owner, 0)
    note = _local_checkpoint_note(owner, 1)
    answer["checkpoint"], answer["entries"] = note, answer["entries"][:1]
    entries, lines, checkpoint = verify_answer(
        "a/sales", owner.home.key().public_bytes, [], None, answer
    )
    incoming = store.incoming("a", "sales")
    table = owner.products.table_dir("sales")
    store.commit(
        "a",
        "sales",
        PulledVersions(
            checkpoint,
            tuple(lines),
            tuple(entries),
            {0: _copy(table / commit_path(0), incoming / "c0")},
            {r.path: _copy(table / r.path, incoming / "f0") for r in entries[0].files_added},
            "contract: x\n",
        ),
    )
    assert store.visible("a", "sales") == (1, 0, 1)
    # The next pull dies after putting its files and entries in place, before the checkpoint.
    pulled = _staged(owner, store, 1)
    real = replicas_module.atomic_write

    def power_cut(path, data):
        if path.name == "checkpoint":
            raise OSError("power cut")
        real(path, data)

    monkeypatch.setattr(replicas_module, "atomic_write", power_cut)
    with pytest.raises(OSError, match="power cut"):
        store.commit("a", "sales", pulled)
    monkeypatch.setattr(replicas_module, "atomic_write", real)
    assert len(store.log("a", "sales").read()) == 3  # entries landed, checkpoint did not
    reopened = Node.open(replica.home.root)  # recovery runs when the node opens
    assert reopened.replicas.visible("a", "sales") == (1, 0, 1)
    assert [e.seq for e, _ in reopened.replicas.log("a", "sales").read()] == [0]
    names = {p.name for p in reopened.replicas.table_dir("a", "sales").rglob("*") if p.is_file()}
    assert names == {Path(commit_path(0)).name, *(r.path for r in history[0][0].files_added)}
    rows = reopened.replicas.snapshot("a", "sales").dataset.to_table().num_rows
    assert rows == 10


def test_publishing_another_nodes_product_is_refused(owner, tmp_path):
    replica = Node.init(tmp_path / "b", "b", "eu-de")
    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({"id": [1]}), path)
    with pytest.raises(RefusedError, match="belongs to node 'a'; only its owner publishes it"):
        replica.publish("a.sales", str(path))
    with pytest.raises(RefusedError, match="only its owner"):
        replica.publish_table("a.sales", pa.table({"id": [1]}))
    assert not replica.products.names()


def test_a_copy_serves_again_only_once_it_caught_up(owner, tmp_path):
    replica = Node.init(tmp_path / "b", "b", "eu-de")
    store = replica.replicas
    answer = _answer(owner, 0)
    entries, lines, checkpoint = verify_answer(
        "a/sales", owner.home.key().public_bytes, [], None, answer
    )
    incoming = store.incoming("a", "sales")
    table = owner.products.table_dir("sales")
    files = {path: _copy(table / path, incoming / Path(path).name) for path in live_files(entries)}
    commits = {
        e.delta_version: _copy(table / commit_path(e.delta_version), incoming / f"c{e.seq}")
        for e in entries
    }
    store.commit(
        "a", "sales", PulledVersions(checkpoint, tuple(lines), tuple(entries), commits, files, "")
    )
    sql = 'SELECT count(*) AS n FROM "a"."sales"'
    # A running server that has not caught up since it started refuses, so the
    # coordinator asks another holder.
    admin = Principal("user:ada", "admin")  # sees the data whole: no policy view needed
    replica.replicator.started = True
    with pytest.raises(UnavailableError, match="catching up"):
        replica.serve_fragment("a", "sales", sql, principal=admin)
    replica.replicator.ready.add("a.sales")
    served = replica.serve_fragment("a", "sales", sql, principal=admin)
    assert served.read_all().to_pylist() == [{"n": 30}]
