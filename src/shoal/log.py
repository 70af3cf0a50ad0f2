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
from shoal.durable import atomic_write
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


class ProductLog:
    """The log files of one product, with append, read, proofs and verification."""

    def __init__(self, directory: Path, origin: str) -> None:
        self.directory = directory
        self.origin = origin
        self._cached: tuple[Frontier, dict[int, bytes]] | None = None

    @property
    def entries_path(self) -> Path:
        return self.directory / "entries.jsonl"

    @property
    def checkpoint_path(self) -> Path:
        return self.directory / "checkpoint"

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
        out: list[tuple[LogEntry, bytes]] = []
        for number, line in enumerate(complete):
            try:
                record = json.loads(line)
                entry = LogEntry.from_body(record["entry"])
                signature = base64.b64decode(record["signature"], validate=True)
            except (ValueError, KeyError, TypeError) as exc:
                raise HistoryError(
                    self.origin, f"entry line {number} is unreadable: {exc}"
                ) from exc
            out.append((entry, signature))
        return out

    def entries(self) -> list[LogEntry]:
        return [entry for entry, _ in self.read()]

    def size(self) -> int:
        """Entries in the log, counted without parsing them."""
        if not self.entries_path.exists():
            return 0
        return self.entries_path.read_bytes().count(b"\n")

    @property
    def state_path(self) -> Path:
        return self.directory / "tree.json"

    def frontier(self) -> tuple[Frontier, dict[int, bytes]]:
        """The tree's right edge and the roots of recent sizes, from a cache file.

        The cache is derived data: it is trusted only when its size and last leaf match the
        log's, and rebuilt from the entries otherwise (for example after a crash).
        """
        size = self.size()
        try:
            data = json.loads(self.state_path.read_bytes())
            last = self.last_entry()
            last_leaf = last.leaf_hash().hex() if last is not None else ""
            if int(data["size"]) == size and data["last_leaf"] == last_leaf:
                nodes = [(int(n), bytes.fromhex(h)) for n, h in data["nodes"]]
                roots = {int(k): bytes.fromhex(v) for k, v in data["roots"].items()}
                return Frontier(size, nodes), roots
        except (OSError, ValueError, KeyError, TypeError):
            pass
        frontier = Frontier()
        for leaf in self.leaf_hashes():
            frontier.push(leaf)
        return frontier, {frontier.size: frontier.root()}

    def _save_frontier(self, frontier: Frontier, roots: dict[int, bytes], last_leaf: bytes) -> None:
        recent = {k: roots[k] for k in sorted(roots)[-16:]}
        data = {
            "size": frontier.size,
            "last_leaf": last_leaf.hex(),
            "nodes": [[n, h.hex()] for n, h in frontier.nodes],
            "roots": {str(k): v.hex() for k, v in recent.items()},
        }
        # Written in place, without fsync: a torn or stale cache disagrees with the log and
        # is rebuilt from it.
        self.state_path.write_bytes(canonical_json(data))

    def last_entry(self) -> LogEntry | None:
        """The newest entry, parsing only its line."""
        if not self.entries_path.exists():
            return None
        lines = self.entries_path.read_bytes().rstrip(b"\n").rsplit(b"\n", 1)
        if not lines[-1]:
            return None
        return LogEntry.from_body(json.loads(lines[-1])["entry"])

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
        """Append a signed entry durably (write, fsync)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        frontier, roots = self.frontier()
        signature = base64.b64encode(key.sign(entry.encode())).decode()
        line = canonical_json({"entry": entry.body(), "signature": signature}) + b"\n"
        fd = os.open(self.entries_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, line)
            os.fdatasync(fd)  # data and size only: all a reader after a crash needs
        finally:
            os.close(fd)
        leaf = entry.leaf_hash()
        frontier.push(leaf)
        roots[frontier.size] = frontier.root()
        self._save_frontier(frontier, roots, leaf)
        self._cached = (frontier, roots)

    def sign_checkpoint(
        self, key: NodeKey, signer: str, hashes: list[bytes] | None = None
    ) -> Checkpoint:
        """Sign the current tree; refuse a fork or a rollback of what was signed before.

        `hashes` are the log's leaf hashes when the caller has them already.
        """
        # Right after an append, the frontier it computed is still current.
        cached, self._cached = self._cached, None
        frontier, roots = cached if cached is not None else self.frontier()
        size, root = frontier.size, frontier.root()
        previous = self.readable_checkpoint()
        if previous is not None:
            if size < previous.size:
                raise HistoryError(
                    self.origin, f"refusing to sign size {size} below signed size {previous.size}"
                )
            old_root = roots.get(previous.size)
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
        # (which is fsynced) when the node next opens.
        tmp = self.checkpoint_path.with_name(f".checkpoint.tmp-{os.getpid()}")
        tmp.write_bytes(checkpoint.note().encode())
        tmp.replace(self.checkpoint_path)
        return checkpoint

    def readable_checkpoint(self) -> Checkpoint | None:
        try:
            return self.checkpoint()
        except ValueError:
            return None  # torn by a crash: it will be signed again

    def repair(self) -> None:
        """Cut a torn last line left by a crash in the middle of an append."""
        if not self.entries_path.exists():
            return
        raw = self.entries_path.read_bytes()
        if raw and not raw.endswith(b"\n"):
            keep = raw[: raw.rfind(b"\n") + 1]
            atomic_write(self.entries_path, keep)

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
