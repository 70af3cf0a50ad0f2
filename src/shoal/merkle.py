"""Merkle tree hashing and proofs exactly as RFC 9162 section 2.1 (Certificate Transparency).

    leaf hash  = SHA-256(0x00 || entry)
    node hash  = SHA-256(0x01 || left || right)
    a tree of n > 1 leaves splits at k, the largest power of two smaller than n
    empty tree = SHA-256("")

The hashing is the same as RFC 6962's, so any CT tooling can check Shoal's log. Inclusion
proofs show that a leaf is in a tree of a given size; consistency proofs show that the tree
at an older size is a prefix of the tree at a newer size. The verifiers follow the RFC's
algorithms (2.1.3.2 and 2.1.4.2) step by step and raise `ProofError` on any mismatch.

`Frontier` keeps only the right edge of a growing tree (one hash per set bit of its size),
so a log appends a leaf and gets the new root in O(log n) and persists a few hashes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from shoal.errors import ShoalError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "Frontier",
    "ProofError",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root_from_leaf_hashes",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()


class ProofError(ShoalError):
    """A Merkle proof does not verify, is malformed, or was asked for sizes that have none."""

    exit_code = 7
    http_status = 409


def leaf_hash(data: bytes) -> bytes:
    """Give the RFC 9162 hash of one log entry's bytes."""
    # The 0x00 prefix keeps a leaf from ever being passed off as an inner node (0x01).
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Give the RFC 9162 hash of an inner node from its two children's hashes."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """Give k, the largest power of two smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def _edge_sizes(size: int) -> list[int]:
    """Give the sizes of the perfect subtrees along a tree's right edge, largest first."""
    return [1 << bit for bit in reversed(range(size.bit_length())) if size >> bit & 1]


class Frontier:
    """The right edge of a growing tree: enough to append a leaf and give the new root.

    A tree of `size` leaves is, left to right, one perfect subtree per set bit of `size`;
    their roots are all that later appends and the root need, so the state is O(log n)
    hashes. Persist it as `size` and `hashes` and restore it with `Frontier.from_hashes`.
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self, size: int = 0, nodes: Iterable[tuple[int, bytes]] = ()) -> None:
        """Restore a frontier from `(subtree size, hash)` pairs, largest subtree first.

        Raises ValueError when the pairs cannot be the edge of a tree of `size` leaves, so a
        caller reading a damaged cache can fall back to rebuilding it from the leaves.
        """
        pairs = list(nodes)
        if size < 0 or [n for n, _ in pairs] != _edge_sizes(size):
            raise ValueError(f"subtree sizes {[n for n, _ in pairs]} do not add up to {size}")
        if any(len(digest) != HASH_SIZE for _, digest in pairs):
            raise ValueError(f"every frontier hash must be {HASH_SIZE} bytes")
        self._size = size
        self._hashes = [digest for _, digest in pairs]

    @classmethod
    def from_hashes(cls, size: int, hashes: Sequence[bytes]) -> Frontier:
        """Give the frontier saved as `size` and `hashes` (ValueError if they disagree)."""
        sizes = _edge_sizes(size) if size >= 0 else []
        if len(hashes) != len(sizes):
            raise ValueError(f"a tree of {size} leaves has {len(sizes)} frontier hashes")
        return cls(size, zip(sizes, hashes, strict=True))

    @property
    def size(self) -> int:
        """The number of leaves appended so far."""
        return self._size

    @property
    def hashes(self) -> list[bytes]:
        """The perfect subtree roots along the right edge, largest subtree first."""
        return list(self._hashes)

    @property
    def nodes(self) -> list[tuple[int, bytes]]:
        """The `(subtree size, hash)` pairs along the right edge, largest subtree first."""
        return list(zip(_edge_sizes(self._size), self._hashes, strict=True))

    def push(self, leaf: bytes) -> None:
        """Append one leaf hash in O(log n)."""
        if len(leaf) != HASH_SIZE:
            raise ValueError(f"a leaf hash must be {HASH_SIZE} bytes, not {len(leaf)}")
        digest, size = leaf, self._size
        # Each trailing set bit of the old size is a perfect subtree the new leaf completes
        # to one twice as big, like a carry in binary addition.
        while size & 1:
            digest = node_hash(self._hashes.pop(), digest)
            size >>= 1
        self._hashes.append(digest)
        self._size += 1

    def root(self) -> bytes:
        """Give the root of the tree of every leaf appended so far, in O(log n)."""
        if not self._hashes:
            return EMPTY_ROOT
        # Splitting at the largest power of two peels off the edge's subtrees left to
        # right, so the root folds them from the right.
        root = self._hashes[-1]
        for left in reversed(self._hashes[:-1]):
            root = node_hash(left, root)
        return root

    def __repr__(self) -> str:
        return f"Frontier(size={self._size})"


def root_from_leaf_hashes(leaf_hashes: Sequence[bytes]) -> bytes:
    """Give the root of the tree over `leaf_hashes`, in O(n) time and O(log n) memory."""
    frontier = Frontier()
    for leaf in leaf_hashes:
        frontier.push(leaf)
    return frontier.root()


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int) -> list[bytes]:
    """Give the audit path (RFC 9162 PATH) for leaf `index` in the tree over `leaf_hashes`.

    O(n): the sibling subtrees on the way down cover each leaf at most once.
    """
    if not 0 <= index < len(leaf_hashes):
        raise ProofError(f"leaf {index} is not in a tree of {len(leaf_hashes)} leaves")
    # PATH(m, D[n]) recurses into the half holding m and appends the other half's root;
    # walking down collects those roots top first, and the RFC lists them leaf first.
    path: list[bytes] = []
    start, end = 0, len(leaf_hashes)
    while end - start > 1:
        middle = start + _split(end - start)
        if index < middle:
            path.append(root_from_leaf_hashes(leaf_hashes[middle:end]))
            end = middle
        else:
            path.append(root_from_leaf_hashes(leaf_hashes[start:middle]))
            start = middle
    path.reverse()
    return path


def consistency_proof(leaf_hashes: Sequence[bytes], old_size: int, new_size: int) -> list[bytes]:
    """Give the proof (RFC 9162 PROOF) that the first `old_size` leaves are a prefix of the
    first `new_size`; empty when the sizes are equal.

    Needs 0 < old_size <= new_size <= len(leaf_hashes): the verifier refuses proofs from the
    empty tree, which every tree extends.
    """
    if not 0 < old_size <= new_size <= len(leaf_hashes):
        raise ProofError(
            f"no consistency proof from size {old_size} to {new_size} "
            f"in a log of {len(leaf_hashes)} leaves"
        )
    # SUBPROOF(m, D[start:end], b) walks down toward the old tree's right edge, appending
    # the other side's root at each step; `known` is b: whether the subtree reached is the
    # whole old tree, whose root the verifier already has.
    proof: list[bytes] = []
    start, end, known = 0, new_size, True
    while old_size != end:
        middle = start + _split(end - start)
        if old_size <= middle:
            proof.append(root_from_leaf_hashes(leaf_hashes[middle:end]))
            end = middle
        else:
            proof.append(root_from_leaf_hashes(leaf_hashes[start:middle]))
            start, known = middle, False
    if not known:
        proof.append(root_from_leaf_hashes(leaf_hashes[start:end]))
    proof.reverse()
    return proof


def _check_hashes(*hashes: bytes) -> None:
    # A short or long "hash" can never be a SHA-256 output; refusing it early gives the
    # user a clearer message than a root mismatch.
    if any(len(digest) != HASH_SIZE for digest in hashes):
        raise ProofError(f"malformed proof: every hash must be {HASH_SIZE} bytes")


def verify_inclusion(
    leaf_hash: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Return if `proof` shows leaf `index` of a `tree_size` tree with `root` has hash
    `leaf_hash` (RFC 9162 2.1.3.2); raise ProofError otherwise."""
    if not 0 <= index < tree_size:
        raise ProofError(f"leaf index {index} is outside a tree of size {tree_size}")
    _check_hashes(leaf_hash, root, *proof)
    fn, sn = index, tree_size - 1  # our node's index and the last node's, level by level
    result = leaf_hash
    for sibling in proof:
        if sn == 0:
            raise ProofError("inclusion proof is too long")
        if fn & 1 or fn == sn:
            result = node_hash(sibling, result)
            # A last node without a right sibling is promoted unchanged, so skip the
            # levels where our node is a left child with nothing to its right.
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            result = node_hash(result, sibling)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof is too short")
    if result != root:
        raise ProofError("inclusion proof does not lead to the root")


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Return if `proof` shows the `old_size` tree with `old_root` is a prefix of the
    `new_size` tree with `new_root` (RFC 9162 2.1.4.2); raise ProofError otherwise."""
    if new_size < old_size:
        raise ProofError(f"size {new_size} is smaller than the earlier size {old_size}")
    if old_size <= 0:
        # Every tree extends the empty one, so such a "proof" proves nothing; refusing it
        # (as the transparency-dev vectors do) keeps a caller from mistaking it for a check.
        raise ProofError("a consistency proof from the empty tree proves nothing")
    if old_size == new_size:
        if proof:
            raise ProofError("sizes are equal but the consistency proof is not empty")
        if old_root != new_root:
            raise ProofError("sizes are equal but the roots differ")
        return
    if not proof:
        raise ProofError("consistency proof is empty")
    _check_hashes(old_root, new_root, *proof)
    path = list(proof)
    # When the old tree is perfect its root is a node of the new tree, so the proof leaves
    # it out and the verifier starts from it.
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:  # start at the largest perfect subtree ending at the old tree's edge
        fn >>= 1
        sn >>= 1
    old = new = path[0]
    for node in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is too long")
        if fn & 1 or fn == sn:
            # A left sibling lies inside the old tree too, so both roots take it.
            old = node_hash(node, old)
            new = node_hash(node, new)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            new = node_hash(new, node)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency proof is too short")
    if old != old_root:
        raise ProofError("consistency proof does not lead to the earlier root")
    if new != new_root:
        raise ProofError("consistency proof does not lead to the later root")
