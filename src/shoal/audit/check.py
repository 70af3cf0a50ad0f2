"""Checking a node's audit log: every entry, the chain between them and the checkpoint.

The same checks as a product log's (`shoal.log.ChainCheck`), on the audit log's entries:
each line must be the canonical rendering of its entry, entries are numbered 0, 1, 2 ...,
each names the leaf hash of the one before and this node, and is signed by one of the
node's keys (current or retired: a server started before `shoal key rotate` keeps signing
with the key it loaded). The checkpoint must be signed by the node and be the root of the
log's first `size` entries. An entry of action `tamper` (written when an append found the
checkpoint disagreeing with the log) fails the check too: the log was altered once.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from shoal.audit.trail import (
    AUDIT_PRODUCT,
    TAMPER,
    AuditFiles,
    lines,
    locked,
    parse_entry,
    signed_line,
)
from shoal.config import Home
from shoal.crypto import public_key_from_bytes
from shoal.crypto import verify as verify_signature
from shoal.log import Checkpoint, HistoryError, canonical_json
from shoal.merkle import Frontier, leaf_hash

__all__ = ["verify"]


def verify(home: Home) -> dict[str, Any]:
    """Check every entry (sequence, link, node, key, signature, canonical form) and the
    checkpoint; raise HistoryError at the first fault. Gives what was checked."""
    files = AuditFiles.of(home)
    node = home.settings.name
    origin = f"{node}.{AUDIT_PRODUCT}"
    trusted = home.trusted_keys()
    # Under the lock, so the checkpoint and the log's length belong together; the lines
    # before that length never change afterwards, so they are read without it.
    with locked(files):
        note = files.checkpoint.read_bytes() if files.checkpoint.exists() else None
        total = files.entries.stat().st_size if files.entries.exists() else 0
    checkpoint = _parse_checkpoint(note, origin, trusted)
    frontier, prev, roots, length = Frontier(), "", {0: Frontier().root()}, 0
    for number, line in lines(files.entries):
        if length + len(line) + 1 > total:
            break
        length += len(line) + 1
        leaf = _check_line(line, number, prev, node, trusted, origin)
        frontier.push(leaf)
        prev = leaf.hex()
        if checkpoint is not None and frontier.size == checkpoint.size:
            roots[frontier.size] = frontier.root()
    size = frontier.size
    if checkpoint is None:
        if size > 1:
            raise HistoryError(
                origin,
                "the checkpoint is missing or empty (removed, or lost in a power cut: "
                "the next entry signs it again)",
            )
    elif checkpoint.size > size:
        raise HistoryError(
            origin, f"the checkpoint signs {checkpoint.size} entries; only {size} remain"
        )
    elif roots.get(checkpoint.size) != checkpoint.root:
        raise HistoryError(origin, "the entries are not those the checkpoint signed")
    signed = checkpoint.size if checkpoint is not None else 0
    return {
        "node": node,
        "entries": size,
        "signed": signed,
        "unsigned": size - signed,  # a crash right after an append; signed at the next one
        "root": base64.b64encode(frontier.root()).decode(),
        "checkpoint": checkpoint.note() if checkpoint is not None else None,
        "torn_bytes": total - length,
    }


def _parse_checkpoint(
    note: bytes | None, origin: str, trusted: dict[str, bytes]
) -> Checkpoint | None:
    if not note:
        return None  # absent or empty: judged against the log's size by the caller
    try:
        checkpoint = Checkpoint.parse(note.decode("utf-8"))
    except ValueError as exc:
        raise HistoryError(origin, f"the checkpoint is unreadable: {exc}") from exc
    if checkpoint.origin != origin.replace(".", "/", 1):
        raise HistoryError(origin, f"the checkpoint is for {checkpoint.origin!r}")
    if not any(checkpoint.verify(public_key_from_bytes(k), k) for k in trusted.values()):
        raise HistoryError(origin, "the checkpoint is not signed by this node")
    return checkpoint


def _check_line(
    line: bytes, number: int, prev: str, node: str, trusted: dict[str, bytes], origin: str
) -> bytes:
    """Check one line; gives its leaf hash."""
    entry = parse_entry(line, number, origin)
    try:
        signature = base64.b64decode(json.loads(line)["signature"], validate=True)
    except (ValueError, TypeError, KeyError) as exc:
        raise HistoryError(origin, f"unreadable signature: {exc}", seq=number) from exc
    encoded = canonical_json(entry)
    if signed_line(encoded, signature) != line:
        raise HistoryError(origin, "the line is not in canonical form (edited)", seq=number)
    if entry["seq"] != number:
        raise HistoryError(origin, f"sequence number {entry['seq']}, expected {number}", seq=number)
    if entry["prev"] != prev:
        raise HistoryError(origin, "broken link to the previous entry", seq=number)
    if entry["node"] != node:
        raise HistoryError(origin, f"the entry names node {entry['node']!r}", seq=number)
    key = trusted.get(str(entry["key_id"]))
    if key is None:
        raise HistoryError(origin, f"signed by an unknown key {entry['key_id']}", seq=number)
    if not verify_signature(public_key_from_bytes(key), signature, encoded):
        raise HistoryError(origin, "bad signature", seq=number)
    if entry["action"] == TAMPER:
        problem = entry["detail"].get("problem") if isinstance(entry["detail"], dict) else None
        raise HistoryError(origin, f"the node found the log altered: {problem}", seq=number)
    return leaf_hash(encoded)
