"""RFC 9162 Merkle trees: transparency-dev known answers, an RFC-literal reference, properties."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.errors import ShoalError
from shoal.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    Frontier,
    ProofError,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)

# The repo sits beside shared/, which holds the known answers every Shoal checkout shares.
VECTORS = Path(__file__).resolve().parents[2] / "shared" / "testdata" / "merkle"
MISSING = (
    f"Merkle known-answer vectors not found at {VECTORS}: this checkout expects "
    "shared/testdata/merkle (roots.json, inclusion/, consistency/) beside the repo"
)


# -- an RFC 9162 reference, written from the RFC's recursive definitions -------------------
# Slow and obviously right: the module under test is iterative, so they share no code.


def ref_split(n):
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(entries):
    """MTH(D[n]) over raw entries."""
    if not entries:
        return hashlib.sha256(b"").digest()
    if len(entries) == 1:
        return hashlib.sha256(b"\x00" + entries[0]).digest()
    k = ref_split(len(entries))
    return hashlib.sha256(b"\x01" + ref_mth(entries[:k]) + ref_mth(entries[k:])).digest()


def ref_path(m, entries):
    """PATH(m, D[n]) as (side of the sibling, hash) pairs, leaf first."""
    if len(entries) == 1:
        return []
    k = ref_split(len(entries))
    if m < k:
        return [*ref_path(m, entries[:k]), ("R", ref_mth(entries[k:]))]
    return [*ref_path(m - k, entries[k:]), ("L", ref_mth(entries[:k]))]


def ref_subproof(m, entries, b=True):
    """SUBPROOF(m, D[n], b) as (step, hash) pairs; PROOF(m, D[n]) when b is true."""
    n = len(entries)
    if m == n:
        return [] if b else [("=", ref_mth(entries))]
    k = ref_split(n)
    if m <= k:
        return [*ref_subproof(m, entries[:k], b), ("R", ref_mth(entries[k:]))]
    return [*ref_subproof(m - k, entries[k:], False), ("L", ref_mth(entries[:k]))]


def shape(steps):
    return [side for side, _ in steps]


def hashes(steps):
    return [digest for _, digest in steps]


# -- known answers ------------------------------------------------------------------------


class UndecodableError(Exception):
    """A vector field that is not base64 (or not a string): the loader rejects the case."""


def vector_files(kind):
    files = sorted((VECTORS / kind).rglob("*.json")) if VECTORS.is_dir() else []
    if not files:  # an empty parameter list would skip silently; make it fail instead
        return [pytest.param(None, id=f"{kind}-vectors-missing")]
    return [pytest.param(path, id=path.relative_to(VECTORS).as_posix()) for path in files]


def load(path):
    if path is None or not path.is_file():
        pytest.fail(MISSING, pytrace=False)
    case = json.loads(path.read_text())
    if not isinstance(case.get("wantErr"), bool):
        pytest.fail(f"{path}: wantErr must be true or false", pytrace=False)
    return case


def hash_field(case, field):
    """Give a base64 field's bytes; a missing or null one is empty, which no check accepts."""
    value = case.get(field)
    if value is None:
        return b""
    if not isinstance(value, str):
        raise UndecodableError(f"{field} is {value!r}")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error as exc:
        raise UndecodableError(f"{field} is not base64: {value!r}") from exc


def proof_field(case):
    """Give the proof's hashes; upstream writes an empty proof as null."""
    value = case.get("proof")
    if value is None:
        return []
    if not isinstance(value, list):
        raise UndecodableError(f"proof is {value!r}")
    return [hash_field({"proof element": item}, "proof element") for item in value]


def size_field(case, field):
    value = case.get(field)
    if not isinstance(value, int) or isinstance(value, bool):
        pytest.fail(f"vector field {field} must be an integer, not {value!r}", pytrace=False)
    return value


def roots_json():
    path = VECTORS / "roots.json"
    if not path.is_file():
        pytest.fail(MISSING, pytrace=False)
    data = json.loads(path.read_text())
    entries = [bytes.fromhex(h) for h in data["leaf_inputs_hex"]]
    return entries, [bytes.fromhex(h) for h in data["roots_hex"]]


def check_vector(case, verify, args):
    if case["wantErr"]:
        with pytest.raises(ProofError):
            verify(*args())
    else:
        verify(*args())


@pytest.mark.parametrize("path", vector_files("inclusion"))
def test_inclusion_vector(path):
    case = load(path)
    try:
        leaf, root, proof = (
            hash_field(case, "leafHash"),
            hash_field(case, "root"),
            proof_field(case),
        )
    except UndecodableError as exc:
        assert case["wantErr"], f"a case that must verify is undecodable: {exc}"
        return
    index, size = size_field(case, "leafIdx"), size_field(case, "treeSize")
    check_vector(case, verify_inclusion, lambda: (leaf, index, size, proof, root))


@pytest.mark.parametrize("path", vector_files("consistency"))
def test_consistency_vector(path):
    case = load(path)
    try:
        old, new, proof = hash_field(case, "root1"), hash_field(case, "root2"), proof_field(case)
    except UndecodableError as exc:
        assert case["wantErr"], f"a case that must verify is undecodable: {exc}"
        return
    sizes = size_field(case, "size1"), size_field(case, "size2")
    check_vector(case, verify_consistency, lambda: (*sizes, old, new, proof))


def test_roots_json_matches_every_way_of_computing_a_root():
    entries, roots = roots_json()
    assert len(roots) == len(entries) + 1
    leaves = [leaf_hash(entry) for entry in entries]
    frontier = Frontier()
    for size, want in enumerate(roots):
        assert root_from_leaf_hashes(leaves[:size]) == want, size
        assert ref_mth(entries[:size]) == want, size
        assert frontier.root() == want, size
        if size < len(leaves):
            frontier.push(leaves[size])
    assert roots[0] == EMPTY_ROOT == hashlib.sha256(b"").digest()


def verifying_vectors(kind):
    paths = [param.values[0] for param in vector_files(kind)]
    cases = [(path.relative_to(VECTORS).as_posix(), load(path)) for path in paths]
    return [(name, case) for name, case in cases if not case["wantErr"]]


def test_generated_inclusion_proofs_equal_the_verifying_vectors():
    entries, roots = roots_json()
    leaves = [leaf_hash(entry) for entry in entries]
    checked = []
    for name, case in verifying_vectors("inclusion"):
        leaf, root, proof = (
            hash_field(case, "leafHash"),
            hash_field(case, "root"),
            proof_field(case),
        )
        index, size = case["leafIdx"], case["treeSize"]
        if size < len(roots) and root == roots[size] and leaf == leaves[index]:
            tree = leaves[:size]  # the happy paths: a prefix of roots.json's leaves
        elif size == 1 and root == leaf:
            tree = [leaf]  # single-entry: a one-leaf tree is its leaf, whatever the leaf
        else:
            pytest.fail(f"{name}: a verifying vector over a tree these tests cannot rebuild")
        assert inclusion_proof(tree, index) == proof, name
        assert root_from_leaf_hashes(tree) == root, name
        checked.append((name, case["desc"], tree == leaves[:size]))
    # The assumption the equalities rest on: every happy path is over roots.json's leaves.
    happy = [(name, ours) for name, desc, ours in checked if desc == "happy path"]
    assert len(happy) == 5, checked
    assert all(ours for _, ours in happy), happy


def test_generated_consistency_proofs_equal_the_verifying_vectors():
    entries, roots = roots_json()
    leaves = [leaf_hash(entry) for entry in entries]
    happy = []
    for name, case in verifying_vectors("consistency"):
        old, new, proof = hash_field(case, "root1"), hash_field(case, "root2"), proof_field(case)
        m, n = case["size1"], case["size2"]
        if n < len(roots) and (old, new) == (roots[m], roots[n]):
            assert consistency_proof(leaves, m, n) == proof, name
            assert proof == hashes(ref_subproof(m, entries[:n])), name
            happy.append(name)
        else:
            # "sizes are equal (one)": 12-byte placeholder roots that are only compared.
            assert m == n and old == new and proof == [], name
    assert len(happy) == 5, happy


# -- the reference and the module agree ---------------------------------------------------


def test_every_proof_equals_the_reference_for_every_small_tree():
    entries = [bytes([i]) * (i % 4) + bytes([i]) for i in range(40)]
    leaves = [leaf_hash(entry) for entry in entries]
    for n in range(len(entries) + 1):
        root = root_from_leaf_hashes(leaves[:n])
        assert root == ref_mth(entries[:n])
        for index in range(n):
            proof = inclusion_proof(leaves[:n], index)
            assert proof == hashes(ref_path(index, entries[:n])), (index, n)
            verify_inclusion(leaves[index], index, n, proof, root)
        for m in range(1, n + 1):
            proof = consistency_proof(leaves, m, n)
            assert proof == hashes(ref_subproof(m, entries[:n])), (m, n)
            verify_consistency(m, n, root_from_leaf_hashes(leaves[:m]), root, proof)


def test_a_hundred_thousand_leaves():
    leaves = [leaf_hash(i.to_bytes(4, "big")) for i in range(100_000)]
    root = root_from_leaf_hashes(leaves)
    verify_inclusion(leaves[77_777], 77_777, 100_000, inclusion_proof(leaves, 77_777), root)
    old_root = root_from_leaf_hashes(leaves[:65_537])
    proof = consistency_proof(leaves, 65_537, 100_000)
    verify_consistency(65_537, 100_000, old_root, root, proof)


# -- properties ---------------------------------------------------------------------------


def lists_of_entries(min_size, *, unique=False):
    # Drawing the length first spreads sizes over 0..200; plain st.lists favours short ones.
    return st.integers(min_size, 200).flatmap(
        lambda n: st.lists(st.binary(max_size=16), min_size=n, max_size=n, unique=unique)
    )


entry_lists = lists_of_entries(0)
# Distinct entries, so no two subtrees hash alike and a wrong claim cannot verify by luck.
distinct_entry_lists = lists_of_entries(1, unique=True)


def flipped(value, bit):
    return value[: bit // 8] + bytes([value[bit // 8] ^ (1 << (bit % 8))]) + value[bit // 8 + 1 :]


def every_bit_flip(values):
    """Give copies of `values` with one bit of one hash flipped, for every bit of each."""
    for at, value in enumerate(values):
        for bit in range(len(value) * 8):
            yield [*values[:at], flipped(value, bit), *values[at + 1 :]]


@settings(max_examples=40, deadline=None)
@given(entry_lists)
def test_every_inclusion_proof_verifies(entries):
    leaves = [leaf_hash(entry) for entry in entries]
    root = root_from_leaf_hashes(leaves)
    assert root == ref_mth(entries)
    for index, leaf in enumerate(leaves):
        verify_inclusion(leaf, index, len(leaves), inclusion_proof(leaves, index), root)
    with pytest.raises(ProofError):
        inclusion_proof(leaves, len(leaves))


@settings(max_examples=40, deadline=None)
@given(entry_lists, st.data())
def test_every_consistency_proof_verifies(entries, data):
    # Every (m, n) of a 200-leaf tree is 20,100 proofs, too slow to repeat: every pair up to
    # 48 leaves, every m against the full size, and every n from one drawn m.
    leaves = [leaf_hash(entry) for entry in entries]
    roots = [root_from_leaf_hashes(leaves[:size]) for size in range(len(leaves) + 1)]
    n = len(leaves)
    pairs = {(m, size) for size in range(min(n, 48) + 1) for m in range(1, size + 1)}
    pairs |= {(m, n) for m in range(1, n + 1)}
    for m, size in sorted(pairs):
        proof = consistency_proof(leaves, m, size)
        verify_consistency(m, size, roots[m], roots[size], proof)
    if n:
        m = data.draw(st.integers(1, n), label="m")
        for size in range(m, n + 1):
            proof = consistency_proof(leaves, m, size)
            verify_consistency(m, size, roots[m], roots[size], proof)
    with pytest.raises(ProofError):
        consistency_proof(leaves, 0, n)


@settings(max_examples=30, deadline=None)
@given(entry_lists)
def test_the_frontier_gives_every_root_and_survives_a_round_trip(entries):
    leaves = [leaf_hash(entry) for entry in entries]
    frontier = Frontier()
    assert frontier.root() == EMPTY_ROOT
    for size, leaf in enumerate(leaves, start=1):
        frontier.push(leaf)
        assert frontier.size == size
        assert frontier.root() == root_from_leaf_hashes(leaves[:size])
        assert len(frontier.hashes) == size.bit_count()
        restored = Frontier.from_hashes(frontier.size, frontier.hashes)
        assert (restored.size, restored.hashes) == (frontier.size, frontier.hashes)
        assert Frontier(frontier.size, frontier.nodes).hashes == frontier.hashes
        frontier = restored  # keep appending to the restored copy
    assert frontier.root() == ref_mth(entries)


@settings(max_examples=40, deadline=None)
@given(distinct_entry_lists, st.data())
def test_a_tampered_inclusion_claim_fails(entries, data):
    leaves = [leaf_hash(entry) for entry in entries]
    n = len(leaves)
    index = data.draw(st.integers(0, n - 1), label="index")
    root, leaf = root_from_leaf_hashes(leaves), leaves[index]
    proof = inclusion_proof(leaves, index)
    verify_inclusion(leaf, index, n, proof, root)
    for leaf_, root_, *proof_ in every_bit_flip([leaf, root, *proof]):
        with pytest.raises(ProofError):
            verify_inclusion(leaf_, index, n, proof_, root_)
    for other in (index - 1, index + 1):
        with pytest.raises(ProofError):
            verify_inclusion(leaf, other, n, proof, root)
    for proof_ in (proof[:-1], [*proof, root], [root, *proof]):
        if proof_ != proof:
            with pytest.raises(ProofError):
                verify_inclusion(leaf, index, n, proof_, root)
    # A root does not bind the tree size (only the signed checkpoint does): the same proof
    # holds for a neighbouring size exactly when that size's path has the same shape.
    path_shape = shape(ref_path(index, entries))
    for size in (n - 1, n + 1):
        if index < size and shape(ref_path(index, [b"x"] * size)) == path_shape:
            verify_inclusion(leaf, index, size, proof, root)
        else:
            with pytest.raises(ProofError):
                verify_inclusion(leaf, index, size, proof, root)


@settings(max_examples=40, deadline=None)
@given(distinct_entry_lists, st.data())
def test_a_tampered_consistency_claim_fails(entries, data):
    leaves = [leaf_hash(entry) for entry in entries]
    n = len(leaves)
    m = data.draw(st.integers(1, n), label="m")
    old, new = root_from_leaf_hashes(leaves[:m]), root_from_leaf_hashes(leaves)
    proof = consistency_proof(leaves, m, n)
    verify_consistency(m, n, old, new, proof)
    for old_, new_, *proof_ in every_bit_flip([old, new, *proof]):
        with pytest.raises(ProofError):
            verify_consistency(m, n, old_, new_, proof_)
    for other in (m - 1, m + 1):
        with pytest.raises(ProofError):
            verify_consistency(other, n, old, new, proof)
    for proof_ in (proof[:-1], [*proof, new], [old, *proof], [*proof, *proof]):
        if proof_ != proof:
            with pytest.raises(ProofError):
                verify_consistency(m, n, old, new, proof_)
    proof_shape = shape(ref_subproof(m, entries))
    for size in (n - 1, n + 1):
        if m <= size and shape(ref_subproof(m, [b"x"] * size)) == proof_shape:
            verify_consistency(m, size, old, new, proof)
        else:
            with pytest.raises(ProofError):
                verify_consistency(m, size, old, new, proof)


# -- edges and errors ---------------------------------------------------------------------


def test_hashing_is_domain_separated():
    assert leaf_hash(b"") == hashlib.sha256(b"\x00").digest()
    left, right = b"a" * 32, b"b" * 32
    assert node_hash(left, right) == hashlib.sha256(b"\x01" + left + right).digest()
    assert node_hash(left, right) != node_hash(right, left)
    assert len(EMPTY_ROOT) == HASH_SIZE


def test_proof_error_is_a_shoal_error_with_exit_code_7():
    assert issubclass(ProofError, ShoalError)
    assert (ProofError.exit_code, ProofError.http_status) == (7, 409)


@pytest.mark.parametrize(
    ("index", "size", "proof"),
    [(0, 0, []), (1, 1, []), (-1, 1, []), (0, 1, [b"x" * 31]), (0, 2, [b"x" * 33])],
)
def test_verify_inclusion_rejects_impossible_claims(index, size, proof):
    with pytest.raises(ProofError):
        verify_inclusion(leaf_hash(b"a"), index, size, proof, leaf_hash(b"a"))


@pytest.mark.parametrize(
    ("old_size", "new_size", "proof"),
    [(0, 0, []), (0, 5, []), (-1, 1, []), (2, 1, []), (1, 2, []), (3, 3, [EMPTY_ROOT])],
)
def test_verify_consistency_rejects_impossible_claims(old_size, new_size, proof):
    with pytest.raises(ProofError):
        verify_consistency(old_size, new_size, EMPTY_ROOT, EMPTY_ROOT, proof)


@pytest.mark.parametrize(("old_size", "new_size"), [(0, 0), (0, 3), (2, 1), (3, 4), (-1, 2)])
def test_consistency_proof_refuses_sizes_without_a_proof(old_size, new_size):
    with pytest.raises(ProofError):
        consistency_proof([leaf_hash(b"a")] * 3, old_size, new_size)


def test_equal_sizes_need_an_empty_proof_and_equal_roots():
    leaves = [leaf_hash(bytes([i])) for i in range(5)]
    assert consistency_proof(leaves, 3, 3) == []
    root = root_from_leaf_hashes(leaves[:3])
    verify_consistency(3, 3, root, root, [])
    with pytest.raises(ProofError):
        verify_consistency(3, 3, root, EMPTY_ROOT, [])


@pytest.mark.parametrize(
    ("size", "nodes"),
    [
        (1, []),
        (0, [(1, EMPTY_ROOT)]),
        (3, [(1, EMPTY_ROOT), (2, EMPTY_ROOT)]),
        (2, [(2, b"short")]),
        (-1, []),
    ],
)
def test_a_frontier_refuses_state_that_is_not_a_tree_edge(size, nodes):
    with pytest.raises(ValueError):
        Frontier(size, nodes)


def test_a_frontier_refuses_the_wrong_number_of_hashes_or_a_short_leaf():
    with pytest.raises(ValueError):
        Frontier.from_hashes(3, [EMPTY_ROOT])
    with pytest.raises(ValueError):
        Frontier().push(b"not a hash")
    assert Frontier.from_hashes(0, []).root() == EMPTY_ROOT
