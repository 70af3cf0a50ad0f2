"""RFC 9162 Merkle trees: known answers from transparency-dev and property tests."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.merkle import (
    EMPTY_ROOT,
    Frontier,
    ProofError,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)

VECTORS = Path(__file__).resolve().parents[2] / "shared" / "testdata" / "merkle"
assert VECTORS.is_dir(), f"the known-answer vectors are missing: {VECTORS}"


def b64(value):
    return base64.b64decode(value) if value else b""


def load(kind):
    return [
        pytest.param(json.loads(path.read_text()), id=str(path.relative_to(VECTORS)))
        for path in sorted((VECTORS / kind).rglob("*.json"))
    ]


ROOTS = json.loads((VECTORS / "roots.json").read_text())
LEAVES = [leaf_hash(bytes.fromhex(h)) for h in ROOTS["leaf_inputs_hex"]]


@pytest.mark.parametrize("size", range(len(ROOTS["roots_hex"])))
def test_roots_match(size):
    assert root_from_leaf_hashes(LEAVES[:size]).hex() == ROOTS["roots_hex"][size]


def test_empty_root():
    assert root_from_leaf_hashes([]) == EMPTY_ROOT


@pytest.mark.parametrize("case", load("inclusion"))
def test_inclusion_vectors(case):
    args = (
        b64(case["leafHash"]),
        case["leafIdx"],
        case["treeSize"],
        [b64(p) for p in case.get("proof") or []],
        b64(case["root"]),
    )
    if case["wantErr"]:
        with pytest.raises(ProofError):
            verify_inclusion(*args)
    else:
        verify_inclusion(*args)


@pytest.mark.parametrize("case", load("consistency"))
def test_consistency_vectors(case):
    args = (
        case["size1"],
        case["size2"],
        b64(case["root1"]),
        b64(case["root2"]),
        [b64(p) for p in case.get("proof") or []],
    )
    if case["wantErr"]:
        with pytest.raises(ProofError):
            verify_consistency(*args)
    else:
        verify_consistency(*args)


@pytest.mark.parametrize(
    "case", [c for c in load("inclusion") if c.values[0]["desc"] == "happy path"]
)
def test_generated_inclusion_proofs_equal_the_vectors(case):
    if case["treeSize"] > len(LEAVES) or b64(case["leafHash"]) != LEAVES[case["leafIdx"]]:
        pytest.fail("happy-path vectors are expected to use the roots.json leaves")
    proof = inclusion_proof(LEAVES[: case["treeSize"]], case["leafIdx"])
    assert proof == [b64(p) for p in case.get("proof") or []]


@pytest.mark.parametrize(
    "case",
    [
        c
        for c in load("consistency")
        if c.values[0]["desc"] == "happy path" and c.values[0]["size1"]
    ],
)
def test_generated_consistency_proofs_equal_the_vectors(case):
    proof = consistency_proof(LEAVES, case["size1"], case["size2"])
    assert proof == [b64(p) for p in case.get("proof") or []]


leaf_lists = st.lists(st.binary(max_size=8), min_size=1, max_size=40).map(
    lambda items: [leaf_hash(i) for i in items]
)


@settings(max_examples=60, deadline=None)
@given(leaf_lists, st.data())
def test_every_inclusion_proof_verifies_and_any_bit_flip_fails(leaves, data):
    root = root_from_leaf_hashes(leaves)
    index = data.draw(st.integers(0, len(leaves) - 1))
    proof = inclusion_proof(leaves, index)
    verify_inclusion(leaves[index], index, len(leaves), proof, root)
    bit = data.draw(st.integers(0, 255))
    with pytest.raises(ProofError):
        verify_inclusion(leaves[index], index, len(leaves), proof, _flip(root, bit))
    with pytest.raises(ProofError):
        verify_inclusion(_flip(leaves[index], bit), index, len(leaves), proof, root)
    if proof:
        at = data.draw(st.integers(0, len(proof) - 1))
        bad = [*proof[:at], _flip(proof[at], bit), *proof[at + 1 :]]
        with pytest.raises(ProofError):
            verify_inclusion(leaves[index], index, len(leaves), bad, root)


@settings(max_examples=60, deadline=None)
@given(leaf_lists, st.data())
def test_every_consistency_proof_verifies_and_any_bit_flip_fails(leaves, data):
    new = len(leaves)
    old = data.draw(st.integers(1, new))
    old_root = root_from_leaf_hashes(leaves[:old])
    new_root = root_from_leaf_hashes(leaves)
    proof = consistency_proof(leaves, old, new)
    verify_consistency(old, new, old_root, new_root, proof)
    bit = data.draw(st.integers(0, 255))
    for bad_old, bad_new in ((_flip(old_root, bit), new_root), (old_root, _flip(new_root, bit))):
        with pytest.raises(ProofError):
            verify_consistency(old, new, bad_old, bad_new, proof)
    if proof:
        at = data.draw(st.integers(0, len(proof) - 1))
        bad = [*proof[:at], _flip(proof[at], bit), *proof[at + 1 :]]
        with pytest.raises(ProofError):
            verify_consistency(old, new, old_root, new_root, bad)


def test_all_pairs_for_small_trees():
    leaves = [leaf_hash(bytes([i])) for i in range(17)]
    for new in range(1, 18):
        root = root_from_leaf_hashes(leaves[:new])
        for index in range(new):
            verify_inclusion(leaves[index], index, new, inclusion_proof(leaves[:new], index), root)
        for old in range(1, new + 1):
            old_root = root_from_leaf_hashes(leaves[:old])
            verify_consistency(old, new, old_root, root, consistency_proof(leaves, old, new))


def _flip(value: bytes, bit: int) -> bytes:
    index = (bit // 8) % len(value)
    return value[:index] + bytes([value[index] ^ (1 << (bit % 8))]) + value[index + 1 :]


@settings(max_examples=40, deadline=None)
@given(leaf_lists)
def test_frontier_root_matches_the_full_tree_after_every_push(leaves):
    frontier = Frontier()
    for count, leaf in enumerate(leaves, start=1):
        frontier.push(leaf)
        assert frontier.root() == root_from_leaf_hashes(leaves[:count])
    copy = Frontier(frontier.size, list(frontier.nodes))
    assert copy.root() == frontier.root()
