"""The audit log's files: appending signed entries safely, and reading them back.

Appends hold a thread lock and a file lock (`<home>/locks/audit.lock`), since a running
server and CLI commands write one home at once. Each process keeps the log's tail (its
length, last leaf and the tree's right edge) in memory and trusts it while the entries file
keeps the size, modification time and inode it recorded; otherwise it reads `tree.json` and
the lines after the length that names, and only when that disagrees every line.
"""

from __future__ import annotations

import base64
import fcntl
import json
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shoal.audit.values import (
    MAX_ENTRY_BYTES,
    as_utc,
    bounded_detail,
    check_action,
    check_text,
    parse_since,
)
from shoal.config import Home
from shoal.crypto import NodeKey
from shoal.durable import fsync_dir
from shoal.errors import ShoalError
from shoal.log import Checkpoint, HistoryError, canonical_json
from shoal.merkle import Frontier, leaf_hash

__all__ = [
    "AUDIT_PRODUCT",
    "MAX_ENTRY_BYTES",
    "TAMPER",
    "AuditFiles",
    "entry_time",
    "lines",
    "locked",
    "parse_entry",
    "read",
    "record",
    "signed_line",
]

log = logging.getLogger("shoal.audit")

AUDIT_PRODUCT = "_audit"  # the name in SQL: `<node>._audit` (no product name starts with _)
TAMPER = "tamper"  # the action of an entry saying the node found its log altered
REQUIRED = ("seq", "time", "node", "who", "action", "detail", "key_id", "prev")
_RECENT_ROOTS = 16
# tree.json only spares a new process reading the whole log, so it is written every so
# many entries, not at each (a third of an append's cost); a process reads the rest.
TREE_EVERY = 64

Stamp = tuple[int, int, int]  # size, mtime (ns), inode
_MISSING: Stamp = (-1, 0, 0)


@dataclass
class _Tail:
    """The end of the log as appending needs it; `length` counts bytes of complete lines."""

    length: int = 0
    size: int = 0
    last_leaf: bytes = b""
    frontier: Frontier = field(default_factory=Frontier)
    roots: dict[int, bytes] = field(default_factory=dict)  # recent sizes, for the fork check
    stamp: Stamp = _MISSING
    torn: int = 0  # bytes after the last newline: an append cut short by a crash
    saved: int = 0  # the size tree.json was last written at (by this process or read)


@dataclass(frozen=True)
class AuditFiles:
    """Where a home keeps its audit log."""

    folder: Path
    entries: Path
    checkpoint: Path
    tree: Path
    lock: Path

    @classmethod
    def of(cls, home: Home) -> AuditFiles:
        folder = home.root / "audit"
        return cls(
            folder,
            folder / "entries.jsonl",
            folder / "checkpoint",
            folder / "tree.json",
            home.root / "locks" / "audit.lock",
        )


# The thread lock guards the tails kept in memory, shared by the process's threads; the
# file lock keeps other processes (a server, CLI commands) out while one appends.
_LOCK = threading.Lock()
_TAILS: dict[Path, _Tail] = {}


@contextmanager
def locked(files: AuditFiles) -> Iterator[None]:
    files.lock.parent.mkdir(exist_ok=True)
    with _LOCK:
        fd = os.open(files.lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # also releases the flock


# -- appending ------------------------------------------------------------------------------
def record(home: Home, action: str, who: str, **fields: Any) -> dict[str, Any]:
    """Append one signed entry to the node's audit log; gives the entry.

    `who` is the principal (`user:alice`, `node:berlin`, `cli`, `anonymous`); `product`
    among `fields` names the product concerned; the other fields (None ones dropped)
    become the entry's detail, cut to fit `MAX_ENTRY_BYTES` with `truncated` set.
    """
    action = check_action(action)
    who = check_text(who, "who")
    product = fields.pop("product", None)
    if product is not None:
        product = check_text(product, "product")
    detail = bounded_detail({k: v for k, v in fields.items() if v is not None})
    body: dict[str, Any] = {"action": action, "who": who, "detail": detail}
    if product is not None:
        body["product"] = product
    files = AuditFiles.of(home)
    key, node = home.key(), home.settings.name
    with locked(files):
        created = not files.folder.exists()
        files.folder.mkdir(exist_ok=True)
        if created:
            fsync_dir(home.root)
        tail = _tail(files)
        if tail.torn:
            _cut_torn(files, tail)
        problem = _checkpoint_problem(files, tail)
        if problem is not None:
            log.error("%s audit log was altered: %s", node, problem)
            evidence = {"action": TAMPER, "who": f"node:{node}", "detail": {"problem": problem}}
            _append(files, tail, key, node, evidence)
        entry = _append(files, tail, key, node, body)
        if tail.saved == 0 or tail.size - tail.saved >= TREE_EVERY:
            _save_tree(files, tail)
        _sign_checkpoint(files, tail, key, node)
    return entry


def _append(
    files: AuditFiles, tail: _Tail, key: NodeKey, node: str, body: dict[str, Any]
) -> dict[str, Any]:
    entry = body | {
        "seq": tail.size,
        "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "node": node,
        "key_id": key.key_id,
        "prev": tail.last_leaf.hex(),
    }
    encoded = canonical_json(entry)
    line = signed_line(encoded, key.sign(encoded)) + b"\n"
    if len(line) > MAX_ENTRY_BYTES:  # bounded_detail leaves room; this guards that promise
        raise ShoalError(f"audit entry of {len(line)} bytes exceeds {MAX_ENTRY_BYTES}")
    new_file = tail.stamp == _MISSING
    fd = os.open(files.entries, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        view = memoryview(line)
        while view:
            view = view[os.write(fd, view) :]
        os.fdatasync(fd)  # data and size: an entry a caller was told about survives a crash
        tail.stamp = _fd_stamp(fd)
    finally:
        os.close(fd)
    if new_file:
        fsync_dir(files.folder)
    leaf = leaf_hash(encoded)
    tail.frontier.push(leaf)
    tail.size, tail.last_leaf, tail.length = tail.frontier.size, leaf, tail.length + len(line)
    tail.roots[tail.size] = tail.frontier.root()
    for old in sorted(tail.roots)[:-_RECENT_ROOTS]:
        del tail.roots[old]
    return entry


def signed_line(encoded: bytes, signature: bytes) -> bytes:
    # canonical_json({"entry": ..., "signature": ...}) without encoding the entry twice
    return b'{"entry":' + encoded + b',"signature":"' + base64.b64encode(signature) + b'"}'


def _cut_torn(files: AuditFiles, tail: _Tail) -> None:
    log.warning("cutting a torn audit entry (%d bytes) left by a crash", tail.torn)
    fd = os.open(files.entries, os.O_RDWR)
    try:
        os.ftruncate(fd, tail.length)
        os.fsync(fd)
        tail.stamp, tail.torn = _fd_stamp(fd), 0
    finally:
        os.close(fd)


def _checkpoint_problem(files: AuditFiles, tail: _Tail) -> str | None:
    """Say how the signed checkpoint disagrees with the log, if it does.

    What a crash leaves is signed again: a checkpoint behind the log (a crash between an
    append and its checkpoint), an empty one (written but not flushed before a power cut),
    none at all after the first append. One ahead of the log, over other entries, garbled
    or gone is an alteration.
    """
    try:
        note = files.checkpoint.read_bytes()
        if not note:
            log.warning("re-signing the audit checkpoint a crash left empty")
            return None
        checkpoint = Checkpoint.parse(note.decode("utf-8"))
    except FileNotFoundError:
        return "the checkpoint was removed" if tail.size > 1 else None
    except (OSError, ValueError) as exc:
        return f"the checkpoint is unreadable: {exc}"
    if checkpoint.size > tail.size:
        return f"the checkpoint signs {checkpoint.size} entries; the log has {tail.size}"
    root = tail.roots.get(checkpoint.size)
    if root is None:  # not among the recent sizes: rare, so the O(n) pass is fine
        frontier = Frontier()
        for number, line in lines(files.entries):
            if number >= checkpoint.size:
                break
            frontier.push(_line_leaf(line))
        root = frontier.root()
    if root != checkpoint.root:
        return f"the first {checkpoint.size} entries are not those the checkpoint signed"
    return None


def _sign_checkpoint(files: AuditFiles, tail: _Tail, key: NodeKey, node: str) -> None:
    checkpoint = Checkpoint.sign(
        f"{node}/{AUDIT_PRODUCT}", tail.size, tail.frontier.root(), node, key
    )
    # No fsync (it would double an append's cost): the rename keeps the old note whole, and
    # a note a power cut left empty is signed again at the next append (see above).
    tmp = files.folder / ".checkpoint.tmp"
    tmp.write_bytes(checkpoint.note().encode())
    tmp.replace(files.checkpoint)


# -- the tail, kept between appends ---------------------------------------------------------
def _tail(files: AuditFiles) -> _Tail:
    """The log's tail: from memory while the file is unchanged, else from tree.json and the
    lines after it, else from every line."""
    try:
        fd = os.open(files.entries, os.O_RDONLY)
    except FileNotFoundError:
        tail = _TAILS[files.folder] = _Tail()
        return tail
    try:
        stamp = _fd_stamp(fd)
        known = _TAILS.get(files.folder)
        if known is not None and known.stamp == stamp:
            return known
        complete = _rfind_newline(fd, stamp[0]) + 1
        candidates = [known if known is not None and known.stamp[2] == stamp[2] else None]
        candidates.append(_read_tree(files))
        base = next((c for c in candidates if c is not None and _ends(fd, c, complete)), _Tail())
        tail = _catch_up(fd, base, complete)
    finally:
        os.close(fd)
    tail.stamp, tail.torn = stamp, stamp[0] - complete
    _TAILS[files.folder] = tail
    return tail


def _ends(fd: int, tail: _Tail, complete: int) -> bool:
    """Tell whether the log's line ending at `tail.length` is the one `tail` ends with."""
    if tail.length == 0:
        return True
    if tail.length > complete or os.pread(fd, 1, tail.length - 1) != b"\n":
        return False
    start = _rfind_newline(fd, tail.length - 1) + 1
    return _line_leaf(os.pread(fd, tail.length - 1 - start, start)) == tail.last_leaf


def _catch_up(fd: int, base: _Tail, complete: int) -> _Tail:
    frontier = Frontier(base.size, base.frontier.nodes)
    last, offset = base.last_leaf, base.length
    with os.fdopen(os.dup(fd), "rb") as handle:
        handle.seek(offset)
        while offset < complete:
            line = handle.readline()
            offset += len(line)
            last = _line_leaf(line.rstrip(b"\n"))
            frontier.push(last)
    roots = dict(base.roots) | {frontier.size: frontier.root()}
    return _Tail(complete, frontier.size, last, frontier, roots, saved=base.saved)


def _line_leaf(line: bytes) -> bytes:
    """The leaf hash of one line: of its canonical entry, else (a damaged line) of its bytes."""
    try:
        entry = json.loads(line)["entry"]
        if isinstance(entry, dict):
            return leaf_hash(canonical_json(entry))
    except (ValueError, TypeError, KeyError, RecursionError):
        pass
    return leaf_hash(line)


def _read_tree(files: AuditFiles) -> _Tail | None:
    try:
        data = json.loads(files.tree.read_bytes())
        size = int(data["size"])
        frontier = Frontier(size, [(int(n), bytes.fromhex(h)) for n, h in data["nodes"]])
        roots = {int(k): bytes.fromhex(v) for k, v in data["roots"].items()}
        last_leaf = bytes.fromhex(data["last_leaf"])
        return _Tail(int(data["length"]), size, last_leaf, frontier, roots, saved=size)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # absent or damaged: derived data, rebuilt from the entries


def _save_tree(files: AuditFiles, tail: _Tail) -> None:
    data = {
        "length": tail.length,
        "size": tail.size,
        "last_leaf": tail.last_leaf.hex(),
        "nodes": [[n, h.hex()] for n, h in tail.frontier.nodes],
        "roots": {str(k): v.hex() for k, v in tail.roots.items()},
    }
    # No fsync: a stale or torn cache disagrees with the entries and is rebuilt from them.
    tmp = files.folder / ".tree.json.tmp"
    tmp.write_bytes(canonical_json(data))
    tmp.replace(files.tree)
    tail.saved = tail.size


def _rfind_newline(fd: int, end: int) -> int:
    """The offset of the last newline before `end`, or -1; reads backwards in growing chunks."""
    chunk, stop = 1 << 14, end
    while stop > 0:
        start = max(0, stop - chunk)
        found = os.pread(fd, stop - start, start).rfind(b"\n")
        if found >= 0:
            return start + found
        stop, chunk = start, chunk * 2
    return -1


def _fd_stamp(fd: int) -> Stamp:
    st = os.fstat(fd)
    return (st.st_size, st.st_mtime_ns, st.st_ino)


# -- reading --------------------------------------------------------------------------------
def lines(path: Path, start: int = 0) -> Iterator[tuple[int, bytes]]:
    """(number, line) of every complete line from byte `start`; a torn last line is left."""
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return
    with handle:
        handle.seek(start)
        for number, line in enumerate(handle):
            if not line.endswith(b"\n"):
                return
            yield number, line[:-1]


def parse_entry(line: bytes, number: int, origin: str) -> dict[str, Any]:
    """The entry of one line; HistoryError when the line is not one (edited or damaged)."""
    try:
        record = json.loads(line)
        entry = record["entry"]
        if not isinstance(entry, dict) or any(name not in entry for name in REQUIRED):
            raise ValueError("not an audit entry")
    except (ValueError, TypeError, KeyError, RecursionError) as exc:
        raise HistoryError(origin, f"line {number} is unreadable: {exc}", seq=number) from exc
    return entry


def read(
    home: Home,
    *,
    who: str | None = None,
    since: datetime | str | None = None,
    action: str | None = None,
    product: str | None = None,
) -> list[dict[str, Any]]:
    """The log's entries (without signatures), oldest first, optionally filtered.

    `since` is a datetime (naive means UTC) or text for `parse_since`. Checks nothing but
    the lines' shape; `verify` checks the chain.
    """
    start = parse_since(since) if isinstance(since, str) else since
    start = as_utc(start) if start is not None else None
    origin = f"{home.settings.name}.{AUDIT_PRODUCT}"
    found = []
    for number, line in lines(AuditFiles.of(home).entries):
        entry = parse_entry(line, number, origin)
        if (
            (who is None or entry["who"] == who)
            and (action is None or entry["action"] == action)
            and (product is None or entry.get("product") == product)
            and (start is None or entry_time(entry) >= start)
        ):
            found.append(entry)
    return found


def entry_time(entry: dict[str, Any]) -> datetime:
    """When the entry was recorded, as an aware datetime."""
    try:
        return as_utc(datetime.fromisoformat(str(entry["time"])))
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)  # an unreadable time sorts first
