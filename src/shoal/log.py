"""A product's tamper-evident history: a signed, append-only Merkle log.

One entry per version (and one per node key rotation). Each entry is canonical JSON
(sorted keys, no insignificant whitespace, UTF-8), signed by the node key, and linked to the
leaf hash of the entry before it. The entries are the leaves of an RFC 9162 Merkle tree
(see `shoal.merkle`); after each append the node signs a checkpoint of the tree's size and
root in the signed-note form transparency logs use:

    berlin/sales
    42
    <base64 root hash>

    — berlin <base64(key hash[4] || Ed25519 signature)>

Files under `products/<name>/log/`:

    entries.jsonl    one line per entry: {"entry": {...}, "signature": "<base64>"}
    checkpoint       the latest signed checkpoint (a signed note); the node signs a new one
                     only for a tree that extends it, so it never signs two roots for one
                     size (a fork) nor a size below one it signed (a rollback)
    tree.json        a cache of the tree's right edge and recent roots, so an append costs
                     O(log n); derived from the entries, rebuilt whenever it disagrees
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from shoal.crypto import NodeKey, key_id_of, public_key_from_bytes, verify
from shoal.errors import ShoalError
from shoal.merkle import (
    Frontier,
    ProofError,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root_from_leaf_hashes,
    verify_consistency,
)

__all__ = [
    "ChainCheck",
    "Checkpoint",
    "FileRef",
    "HistoryError",
    "LogEntry",
    "LogState",
    "ProductLog",
    "canonical_json",
    "check_chain",
    "note_key_hash",
]

ENTRY_VERSION = "version"
ENTRY_KEY_ROTATION = "key-rotation"
_SIGNATURE_DASH = "\u2014"  # signed notes start signature lines with an em dash


class HistoryError(ShoalError):
    """The history does not verify: a file, entry, link, signature or checkpoint is wrong."""

    exit_code = 7
    http_status = 409

    def __init__(self, product: str, problem: str, *, seq: int | None = None) -> None:
        where = f" at entry {seq}" if seq is not None else ""
        super().__init__(f"{product}: history does not verify{where}: {problem}")
        self.product = product
        self.problem = problem
        self.seq = seq


def canonical_json(data: Mapping[str, Any]) -> bytes:
    """Give the canonical bytes of `data`: sorted keys, no spaces, UTF-8."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Path) -> str:
    """Hash a file in 1 MiB chunks so memory stays flat whatever its size."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class FileRef:
    """A data file named in a version: its path in the table, SHA-256 and size."""

    path: str
    sha256: str
    size: int

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "size": self.size}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FileRef:
        return cls(str(data["path"]), str(data["sha256"]), int(data["size"]))


@dataclass(frozen=True)
class LogEntry:
    """One entry of a product log; `body()` is what is hashed and signed."""

    kind: str
    product: str
    seq: int
    version: int
    delta_version: int
    files_added: tuple[FileRef, ...]
    files_removed: tuple[FileRef, ...]
    commit_sha256: str
    schema_sha256: str
    contract_sha256: str
    rows_added: int
    rows_removed: int
    time: str
    key_id: str
    prev: str
    new_key: str = ""

    def body(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "kind": self.kind,
            "product": self.product,
            "seq": self.seq,
            "version": self.version,
            "delta_version": self.delta_version,
            "files_added": [f.to_dict() for f in self.files_added],
            "files_removed": [f.to_dict() for f in self.files_removed],
            "commit_sha256": self.commit_sha256,
            "schema_sha256": self.schema_sha256,
            "contract_sha256": self.contract_sha256,
            "rows_added": self.rows_added,
            "rows_removed": self.rows_removed,
            "time": self.time,
            "key_id": self.key_id,
            "prev": self.prev,
        }
        if self.new_key:
            data["new_key"] = self.new_key
        return data

    def encode(self) -> bytes:
        return canonical_json(self.body())

    def leaf_hash(self) -> bytes:
        return leaf_hash(self.encode())

    @classmethod
    def from_body(cls, data: Mapping[str, Any]) -> LogEntry:
        try:
            return cls(
                kind=str(data["kind"]),
                product=str(data["product"]),
                seq=int(data["seq"]),
                version=int(data["version"]),
                delta_version=int(data["delta_version"]),
                files_added=tuple(FileRef.from_dict(f) for f in data["files_added"]),
                files_removed=tuple(FileRef.from_dict(f) for f in data["files_removed"]),
                commit_sha256=str(data["commit_sha256"]),
                schema_sha256=str(data["schema_sha256"]),
                contract_sha256=str(data["contract_sha256"]),
                rows_added=int(data["rows_added"]),
                rows_removed=int(data["rows_removed"]),
                time=str(data["time"]),
                key_id=str(data["key_id"]),
                prev=str(data["prev"]),
                new_key=str(data.get("new_key", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed log entry: {exc}") from exc


def note_key_hash(name: str, public: bytes) -> bytes:
    """Give the 4-byte key hash a signed note names its Ed25519 key by (0x01 = Ed25519)."""
    return hashlib.sha256(name.encode() + b"\n" + b"\x01" + public).digest()[:4]


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement that the log `origin` had `size` entries with root `root`."""

    origin: str
    size: int
    root: bytes
    signer: str
    signature: bytes  # 4-byte key hash followed by the Ed25519 signature

    def text(self) -> str:
        """The signed part of the note: origin, size and root, each on its own line."""
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"

    def note(self) -> str:
        sig = base64.b64encode(self.signature).decode()
        return f"{self.text()}\n{_SIGNATURE_DASH} {self.signer} {sig}\n"

    @classmethod
    def sign(cls, origin: str, size: int, root: bytes, signer: str, key: NodeKey) -> Checkpoint:
        body = f"{origin}\n{size}\n{base64.b64encode(root).decode()}\n".encode()
        signature = note_key_hash(signer, key.public_bytes) + key.sign(body)
        return cls(origin, size, root, signer, signature)

    @classmethod
    def parse(cls, note: str) -> Checkpoint:
        """Read a signed note; raise ValueError when it is not one."""
        text, sep, signatures = note.partition("\n\n")
        lines = text.split("\n")
        if not sep or len(lines) != 3:
            raise ValueError("not a checkpoint: want origin, size and root lines, a blank line")
        origin, size_text, root_text = lines
        if not size_text.isdigit() or (size_text != "0" and size_text.startswith("0")):
            raise ValueError(f"not a checkpoint: bad tree size {size_text!r}")
        try:
            root = base64.b64decode(root_text, validate=True)
        except ValueError as exc:
            raise ValueError("not a checkpoint: root hash is not base64") from exc
        if len(root) != 32:
            raise ValueError("not a checkpoint: root hash is not 32 bytes")
        first = signatures.split("\n", 1)[0]
        parts = first.split(" ")
        if len(parts) != 3 or parts[0] != _SIGNATURE_DASH:
            raise ValueError("not a checkpoint: no signature line")
        try:
            signature = base64.b64decode(parts[2], validate=True)
        except ValueError as exc:
            raise ValueError("not a checkpoint: signature is not base64") from exc
        if len(signature) != 4 + 64:
            raise ValueError("not a checkpoint: signature has the wrong length")
        return cls(origin, int(size_text), root, parts[1], signature)

    def verify(self, public: Ed25519PublicKey, public_bytes: bytes) -> bool:
        """Tell whether the note is signed by this key."""
        if self.signature[:4] != note_key_hash(self.signer, public_bytes):
            return False
        return verify(public, self.signature[4:], self.text().encode())


Stamp = tuple[int, int, int]
"""A file's size, modification time (ns) and inode; (-1, 0, 0) when it does not exist."""

_MISSING: Stamp = (-1, 0, 0)


@dataclass
class LogState:
    """What appending needs to know of a log: its end, last entry, tree edge, checkpoint.

    `length` counts the bytes of complete lines; `torn` the bytes after them that a crash in
    the middle of an append left (cut off by `ProductLog.repair`). The stamps are those of
    the entries and checkpoint files the state describes.
    """

    length: int
    torn: int
    size: int
    last: LogEntry | None
    last_leaf: bytes
    frontier: Frontier
    roots: dict[int, bytes]  # the roots of recent sizes, for the fork check
    checkpoint: Checkpoint | None  # the latest readable checkpoint
    entries_stamp: Stamp
    checkpoint_stamp: Stamp


class ProductLog:
    """The log files of one product, with append, read, proofs and verification.

    Appending works from a `LogState`: the tail of the entries file, the tree cache and the
    checkpoint, read once and then kept up to date in memory, in `states` when the caller
    keeps them between uses (the product store does, so a publish reads none of these
    files). A state is used only while both files still have the size, modification time
    and inode it recorded; otherwise it is read again. Only the product's lock holder
    writes the log.
    """

    def __init__(
        self, directory: Path, origin: str, states: dict[Path, LogState] | None = None
    ) -> None:
        self.directory = directory
        self.origin = origin
        self.entries_path = directory / "entries.jsonl"
        self.checkpoint_path = directory / "checkpoint"
        self.state_path = directory / "tree.json"
        self._states: dict[Path, LogState] = states if states is not None else {}

    # -- reading ------------------------------------------------------------------------
    def read(self) -> list[tuple[LogEntry, bytes]]:
        """Every entry with its signature, oldest first.

        A last line without its newline is a torn append from a crash; it is ignored here
        and cut off by `repair()`.
        """
        if not self.entries_path.exists():
            return []
        raw = self.entries_path.read_bytes()
        lines = raw.split(b"\n")
        complete = lines[:-1]  # the part after the last newline is empty or torn
        return [self._parse_line(line, number) for number, line in enumerate(complete)]

    def _parse_line(self, line: bytes, number: int) -> tuple[LogEntry, bytes]:
        try:
            record = json.loads(line)
            entry = LogEntry.from_body(record["entry"])
            signature = base64.b64decode(record["signature"], validate=True)
        except (ValueError, KeyError, TypeError) as exc:
            where = f"entry line {number}" if number >= 0 else "the last entry line"
            raise HistoryError(self.origin, f"{where} is unreadable: {exc}") from exc
        return entry, signature

    def entries(self) -> list[LogEntry]:
        return [entry for entry, _ in self.read()]

    def size(self) -> int:
        """Entries in the log, counted without parsing them."""
        if not self.entries_path.exists():
            return 0
        return self.entries_path.read_bytes().count(b"\n")

    def state(self) -> LogState:
        """The log's state, from memory while its files are unchanged (two stats)."""
        state = self._states.get(self.directory)
        if (
            state is not None
            and state.entries_stamp == _stamp(self.entries_path)
            and state.checkpoint_stamp == _stamp(self.checkpoint_path)
        ):
            return state
        return self.load()

    def load(self) -> LogState:
        """Read the log's state from its files: the tail of the entries and the tree cache.

        The cache (tree.json) is derived data: it is trusted only when its length and last
        leaf match the entries file's, and rebuilt from the entries otherwise (for example
        after a crash, or in a home written before the cache recorded the length).
        """
        note, checkpoint_stamp = _read_stamped(self.checkpoint_path)
        try:
            checkpoint = Checkpoint.parse(note.decode("utf-8")) if note is not None else None
        except ValueError:
            checkpoint = None  # torn by a crash: it will be signed again
        try:
            fd = os.open(self.entries_path, os.O_RDONLY)
        except FileNotFoundError:
            state = LogState(
                0, 0, 0, None, b"", Frontier(), {}, checkpoint, _MISSING, checkpoint_stamp
            )
            self._states[self.directory] = state
            return state
        try:
            entries_stamp = _fd_stamp(fd)
            length, line = _last_line(fd, entries_stamp[0])
        finally:
            os.close(fd)
        last = self._parse_line(line, -1)[0] if line else None
        last_leaf = last.leaf_hash() if last is not None else b""
        cached = self._read_tree_cache(length, last_leaf)
        if cached is not None:
            frontier, roots = cached
        else:
            frontier = Frontier()
            for leaf in self.leaf_hashes():
                frontier.push(leaf)
            roots = {frontier.size: frontier.root()}
            self._save_tree_cache(length, frontier, roots, last_leaf)
        state = LogState(
            length,
            entries_stamp[0] - length,
            frontier.size,
            last,
            last_leaf,
            frontier,
            roots,
            checkpoint,
            entries_stamp,
            checkpoint_stamp,
        )
        self._states[self.directory] = state
        return state

    def frontier(self) -> tuple[Frontier, dict[int, bytes]]:
        """The tree's right edge and the roots of recent sizes, read from the files."""
        state = self.load()
        return state.frontier, state.roots

    def _read_tree_cache(
        self, length: int, last_leaf: bytes
    ) -> tuple[Frontier, dict[int, bytes]] | None:
        try:
            data = json.loads(self.state_path.read_bytes())
            if int(data["length"]) != length or data["last_leaf"] != last_leaf.hex():
                return None
            nodes = [(int(n), bytes.fromhex(h)) for n, h in data["nodes"]]
            roots = {int(k): bytes.fromhex(v) for k, v in data["roots"].items()}
            frontier = Frontier(int(data["size"]), nodes)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None
        if (frontier.size == 0) != (length == 0):
            return None
        return frontier, roots

    def _save_tree_cache(
        self, length: int, frontier: Frontier, roots: dict[int, bytes], last_leaf: bytes
    ) -> None:
        for old in sorted(roots)[:-16]:
            del roots[old]
        data = canonical_json(
            {
                "length": length,
                "size": frontier.size,
                "last_leaf": last_leaf.hex(),
                "nodes": [[n, h.hex()] for n, h in frontier.nodes],
                "roots": {str(k): v.hex() for k, v in roots.items()},
            }
        )
        # Overwritten in place, padded with blanks so it never shrinks (no truncation), and
        # without fsync: a torn or stale cache disagrees with the log and is rebuilt from it.
        try:
            fd = os.open(self.state_path, os.O_WRONLY | os.O_CREAT, 0o644)
        except FileNotFoundError:
            return  # no log folder yet: nothing to cache
        try:
            room = max(os.fstat(fd).st_size, -(-len(data) // 1024) * 1024)
            _write_all(fd, data + b" " * (room - len(data)), 0)
        finally:
            os.close(fd)

    def last_entry(self) -> LogEntry | None:
        """The newest complete entry, parsing only its line."""
        if not self.entries_path.exists():
            return None
        with self.entries_path.open("rb") as handle:
            _, line = _last_line(handle.fileno(), os.fstat(handle.fileno()).st_size)
        return self._parse_line(line, -1)[0] if line else None

    def leaf_hashes(self) -> list[bytes]:
        return [entry.leaf_hash() for entry in self.entries()]

    def root(self, size: int | None = None) -> bytes:
        hashes = self.leaf_hashes()
        return root_from_leaf_hashes(hashes if size is None else hashes[:size])

    def checkpoint(self) -> Checkpoint | None:
        if not self.checkpoint_path.exists():
            return None
        return Checkpoint.parse(self.checkpoint_path.read_text(encoding="utf-8"))

    # -- writing ------------------------------------------------------------------------
    def append(self, entry: LogEntry, key: NodeKey) -> None:
        """Append a signed entry durably (write, fdatasync); it must extend the log."""
        state = self.state()
        if state.torn:
            self.repair()
            state = self.state()
        if entry.seq != state.size or entry.prev != state.last_leaf.hex():
            raise HistoryError(
                self.origin,
                f"refusing to append entry {entry.seq}: it does not extend the log "
                f"({state.size} entries)",
            )
        encoded = entry.encode()
        signature = base64.b64encode(key.sign(encoded))
        # canonical_json({"entry": body, "signature": ...}) without encoding the body twice.
        line = b'{"entry":' + encoded + b',"signature":"' + signature + b'"}\n'
        leaf = leaf_hash(encoded)
        frontier = Frontier(state.size, state.frontier.nodes)
        frontier.push(leaf)
        roots = {**state.roots, frontier.size: frontier.root()}
        if state.entries_stamp == _MISSING:
            self.directory.mkdir(parents=True, exist_ok=True)
        # The cache goes first so the entry's fsync commits its metadata too; until the entry
        # is written it names a length the log does not have, so it would be rebuilt.
        self._save_tree_cache(state.length + len(line), frontier, roots, leaf)
        fd = os.open(self.entries_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            _write_all(fd, line)
            os.fdatasync(fd)  # data and size only: all a reader after a crash needs
            state.entries_stamp = _fd_stamp(fd)
        finally:
            os.close(fd)
        state.frontier, state.roots, state.size = frontier, roots, frontier.size
        state.length += len(line)
        state.last, state.last_leaf = entry, leaf

    def sign_checkpoint(
        self,
        key: NodeKey,
        signer: str,
        hashes: list[bytes] | None = None,
        *,
        via: Path | None = None,
    ) -> Checkpoint:
        """Sign the current tree; refuse a fork or a rollback of what was signed before.

        `hashes` are the log's leaf hashes when the caller has them already. `via` is an
        empty file of the log folder to write the note into and rename into place (a
        publish's marker, which this consumes); otherwise a temporary file is made.
        """
        state = self.state()
        size, root = state.frontier.size, state.frontier.root()
        previous = state.checkpoint
        if previous is not None:
            if size < previous.size:
                raise HistoryError(
                    self.origin, f"refusing to sign size {size} below signed size {previous.size}"
                )
            old_root = state.roots.get(previous.size)
            if old_root is None:  # not among the recent sizes: compute it from the leaves
                leaves = self.leaf_hashes() if hashes is None else hashes
                old_root = root_from_leaf_hashes(leaves[: previous.size])
            if old_root != previous.root:
                raise HistoryError(
                    self.origin,
                    f"refusing to sign a tree that does not extend the signed size "
                    f"{previous.size} (fork)",
                )
        checkpoint = Checkpoint.sign(self.origin, size, root, signer, key)
        # No fsync: a checkpoint lost in a crash is signed again, identically, from the log
        # (which is fsynced) when the node next opens. The rename keeps the one signed
        # before whole until the new one is complete, for readers and for the fork check.
        tmp = via or self.checkpoint_path.with_name(f".checkpoint.tmp-{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY if via else os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _write_all(fd, checkpoint.note().encode())
            stamp = _fd_stamp(fd)
        finally:
            os.close(fd)
        tmp.replace(self.checkpoint_path)
        state.checkpoint, state.checkpoint_stamp = checkpoint, stamp
        return checkpoint

    def readable_checkpoint(self) -> Checkpoint | None:
        try:
            return self.checkpoint()
        except ValueError:
            return None  # torn by a crash: it will be signed again

    def repair(self) -> None:
        """Cut a torn last line left by a crash in the middle of an append."""
        try:
            fd = os.open(self.entries_path, os.O_RDWR)
        except FileNotFoundError:
            return
        try:
            total = os.fstat(fd).st_size
            length, _ = _last_line(fd, total)
            if length != total:
                os.ftruncate(fd, length)
                os.fsync(fd)
        finally:
            os.close(fd)

    # -- proofs -------------------------------------------------------------------------
    def inclusion(self, seq: int, size: int | None = None) -> list[bytes]:
        hashes = self.leaf_hashes()
        return inclusion_proof(hashes[: size or len(hashes)], seq)

    def consistency(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        hashes = self.leaf_hashes()
        return consistency_proof(hashes, old_size, new_size or len(hashes))

    def check_extends(self, earlier: Checkpoint) -> None:
        """Prove the local history extends `earlier` (a checkpoint saved before)."""
        if earlier.origin != self.origin:
            raise HistoryError(self.origin, f"checkpoint is for {earlier.origin!r}")
        hashes = self.leaf_hashes()
        if earlier.size > len(hashes):
            raise HistoryError(
                self.origin,
                f"local history has {len(hashes)} entries, fewer than the checkpoint's "
                f"{earlier.size} (rolled back)",
            )
        if earlier.size == 0:
            return  # every history extends the empty one
        proof = consistency_proof(hashes, earlier.size, len(hashes))
        try:
            verify_consistency(
                earlier.size, len(hashes), earlier.root, root_from_leaf_hashes(hashes), proof
            )
        except ProofError as exc:
            raise HistoryError(
                self.origin, f"local history does not extend the checkpoint (forked): {exc}"
            ) from exc


def _last_line(fd: int, total: int) -> tuple[int, bytes]:
    """Give the bytes of complete lines in the file and the last complete line.

    Reads backwards from the end in growing chunks, so a long log costs no more than
    its last line.
    """
    chunk = 1 << 16
    while True:
        start = max(0, total - chunk)
        data = os.pread(fd, total - start, start)
        end = data.rfind(b"\n")
        if end < 0:
            if start == 0:
                return 0, b""
        else:
            begin = data.rfind(b"\n", 0, end) + 1
            if begin > 0 or start == 0:
                return start + end + 1, data[begin:end]
        chunk *= 4


def _write_all(fd: int, data: bytes, offset: int | None = None) -> None:
    """Write all of `data` at the end (O_APPEND) or at `offset`."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view) if offset is None else os.pwrite(fd, view, offset)
        view = view[written:]
        offset = None if offset is None else offset + written


def _fd_stamp(fd: int) -> Stamp:
    st = os.fstat(fd)
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def _stamp(path: Path) -> Stamp:
    try:
        st = path.stat()
    except FileNotFoundError:
        return _MISSING
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def _read_stamped(path: Path) -> tuple[bytes | None, Stamp]:
    """A file's bytes and the stamp of what was read (None and _MISSING if it is absent)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None, _MISSING
    try:
        stamp = _fd_stamp(fd)
        return os.pread(fd, stamp[0], 0), stamp
    finally:
        os.close(fd)


class ChainCheck:
    """Checks entries one at a time, in order: sequence, link, signature, key rotations.

    The first entry must be signed by a key in `trusted` (key id -> raw public key, from
    outside the log); each later entry by the key in force, which only a rotation entry,
    signed by the key before it, can change.
    """

    def __init__(self, product: str, trusted: Mapping[str, bytes]) -> None:
        self.product = product
        self.trusted = trusted
        self.key: bytes | None = None
        self.prev = ""
        self.seq = 0

    def step(self, entry: LogEntry, signature: bytes) -> None:
        seq = self.seq
        if entry.seq != seq:
            raise HistoryError(
                self.product, f"sequence number {entry.seq}, expected {seq}", seq=seq
            )
        if entry.prev != self.prev:
            raise HistoryError(self.product, "broken link to the previous entry", seq=seq)
        key = self.key if self.key is not None else self.trusted.get(entry.key_id)
        if key is None or key_id_of(key) != entry.key_id:
            raise HistoryError(self.product, f"signed by an unknown key {entry.key_id}", seq=seq)
        if not verify(public_key_from_bytes(key), signature, entry.encode()):
            raise HistoryError(self.product, "bad signature", seq=seq)
        self.key = base64.b64decode(entry.new_key) if entry.kind == ENTRY_KEY_ROTATION else key
        self.prev = entry.leaf_hash().hex()
        self.seq += 1


def check_chain(
    product: str, records: Iterable[tuple[LogEntry, bytes]], trusted: Mapping[str, bytes]
) -> bytes | None:
    """Check a whole log's chain; give the key in force at its end (None when empty)."""
    chain = ChainCheck(product, trusted)
    for entry, signature in records:
        chain.step(entry, signature)
    return chain.key


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")
