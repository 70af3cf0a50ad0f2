"""Merkle tree hashing and proofs exactly as RFC 9162 section 2.1 (Certificate Transparency).

    leaf hash  = SHA-256(0x00 || entry)
    node hash  = SHA-256(0x01 || left || right)
    a tree of n > 1 leaves splits at k, the largest power of two smaller than n
    empty tree = SHA-256("")

Inclusion proofs show that a leaf is in a tree of a given size; consistency proofs show that
the tree at an older size is a prefix of the tree at a newer size. The verifiers follow the
RFC's algorithms (2.1.3.2 and 2.1.4.2) step by step.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import lru_cache

from shoal.errors import ShoalError

__all__ = [
    "EMPTY_ROOT",
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

EMPTY_ROOT = hashlib.sha256(b"").digest()
HASH_SIZE = 32


class ProofError(ShoalError):
    """A proof does not verify (or is malformed)."""

    exit_code = 7
    http_status = 409


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """Give the largest power of two smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_from_leaf_hashes(leaves: Sequence[bytes]) -> bytes:
    """Give the root of the tree over `leaves` (leaf hashes), in O(n)."""
    if not leaves:
        return EMPTY_ROOT
    # Fold left to right keeping the right edge as a stack of perfect subtree roots: the
    # same shape the RFC's recursive split gives, without recursion.
    stack: list[tuple[int, bytes]] = []  # (subtree size, hash)
    for leaf in leaves:
        size, digest = 1, leaf
        while stack and stack[-1][0] == size:
            left_size, left = stack.pop()
            size, digest = left_size + size, node_hash(left, digest)
        stack.append((size, digest))
    _, root = stack.pop()
    while stack:
        _, left = stack.pop()
        root = node_hash(left, root)
    return root


class Frontier:
    """The right edge of a growing tree: O(log n) perfect-subtree roots, so appending a leaf
    and getting the new root costs O(log n) instead of rehashing every leaf."""

    def __init__(self, size: int = 0, nodes: Sequence[tuple[int, bytes]] = ()) -> None:
        self.size = size
        self.nodes = list(nodes)  # (subtree size, hash), largest first

    def push(self, leaf: bytes) -> None:
        size, digest = 1, leaf
        while self.nodes and self.nodes[-1][0] == size:
            left_size, left = self.nodes.pop()
            size, digest = left_size + size, node_hash(left, digest)
        self.nodes.append((size, digest))
        self.size += 1

    def root(self) -> bytes:
        if not self.nodes:
            return EMPTY_ROOT
        root = self.nodes[-1][1]
        for _, left in reversed(self.nodes[:-1]):
            root = node_hash(left, root)
        return root


class _Tree:
    """Subtree roots over a fixed list of leaf hashes, memoised for proof building."""

    def __init__(self, leaves: Sequence[bytes]) -> None:
        self.leaves = list(leaves)
        self.root = lru_cache(maxsize=None)(self._root)

    def _root(self, start: int, end: int) -> bytes:
        return root_from_leaf_hashes(self.leaves[start:end])

    def path(self, m: int, start: int, end: int) -> list[bytes]:
        """RFC 9162 PATH(m, D[start:end])."""
        n = end - start
        if n <= 1:
            return []
        k = _split(n)
        if m < k:
            return [*self.path(m, start, start + k), self.root(start + k, end)]
        return [*self.path(m - k, start + k, end), self.root(start, start + k)]

    def subproof(self, m: int, start: int, end: int, whole: bool) -> list[bytes]:
        """RFC 9162 SUBPROOF(m, D[start:end], b)."""
        n = end - start
        if m == n:
            return [] if whole else [self.root(start, end)]
        k = _split(n)
        if m <= k:
            return [*self.subproof(m, start, start + k, whole), self.root(start + k, end)]
        return [*self.subproof(m - k, start + k, end, False), self.root(start, start + k)]


def _check_hashes(*hashes: bytes) -> None:
    if any(len(h) != HASH_SIZE for h in hashes):
        raise ProofError(f"malformed proof: every hash must be {HASH_SIZE} bytes")


def inclusion_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """Give the audit path proving leaf `index` is in the tree over `leaves`."""
    if not 0 <= index < len(leaves):
        raise ProofError(f"leaf {index} is not in a tree of {len(leaves)} leaves")
    return _Tree(leaves).path(index, 0, len(leaves))


def consistency_proof(leaves: Sequence[bytes], old_size: int, new_size: int) -> list[bytes]:
    """Give the proof that the tree of `old_size` leaves is a prefix of `new_size`'s."""
    if not 0 < old_size <= new_size <= len(leaves):
        raise ProofError(f"no consistency proof from size {old_size} to {new_size}")
    return _Tree(leaves[:new_size]).subproof(old_size, 0, new_size, True)


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check an inclusion proof (RFC 9162 2.1.3.2); raise ProofError when it fails."""
    _check_hashes(leaf, root, *proof)
    if index < 0 or index >= size:
        raise ProofError(f"leaf index {index} is outside a tree of size {size}")
    fn, sn = index, size - 1
    result = leaf
    for sibling in proof:
        if sn == 0:
            raise ProofError("inclusion proof is too long")
        if fn & 1 or fn == sn:
            result = node_hash(sibling, result)
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
    """Check a consistency proof (RFC 9162 2.1.4.2); raise ProofError when it fails."""
    if old_size < 0 or new_size < old_size:
        raise ProofError(f"size {new_size} is smaller than {old_size}")
    if old_size == 0:
        # Every tree extends the empty tree, so such a proof proves nothing; refusing it
        # keeps a caller from mistaking it for a check (as the transparency-dev vectors do).
        raise ProofError("no consistency proof from the empty tree")
    if old_size == new_size:
        if proof:
            raise ProofError("sizes are equal but the proof is not empty")
        if old_root != new_root:
            raise ProofError("sizes are equal but the roots differ")
        return
    _check_hashes(old_root, new_root, *proof)
    if not proof:
        raise ProofError("consistency proof is empty")
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # a power of two: the old root is a node of the path
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    first = second = path[0]
    for node in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is too long")
        if fn & 1 or fn == sn:
            first = node_hash(node, first)
            second = node_hash(node, second)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            second = node_hash(second, node)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency proof is too short")
    if first != old_root:
        raise ProofError("consistency proof does not lead to the old root")
    if second != new_root:
        raise ProofError("consistency proof does not lead to the new root")
