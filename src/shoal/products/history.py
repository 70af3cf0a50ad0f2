"""A product's signed history: every Delta commit Shoal makes becomes a log entry.

The publish pipeline and crash recovery share one path: after the Delta commit (or when a
product is next locked, if the process died right after it), `ProductHistory.catch_up`
records the commit as a signed log entry and signs a new checkpoint.

A publish announces its commit inside the commit itself: the Delta commit info carries
`shoal.announcement`, the SHA-256 of each staged file and the leaf hash of the log entry
it will follow, signed by the node key. Recovery logs only a commit whose announcement
verifies against the node's keys and follows the log's last entry; a Delta commit nobody
announced is left unlogged for `verify` to report, never signed.

Before any file can reach the table folder the publish creates an empty `log/publishing`
marker; after the commit is logged, the new checkpoint is written into it and it is renamed
over `log/checkpoint`, so one rename signs the checkpoint and ends the publish. A crash
leaves the marker behind, and recovery then also removes the files that no Delta commit
names. Homes whose crashed publish left the older `log/pending.json` announcement are
recovered the same way.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from shoal.crypto import NodeKey, public_key_from_bytes, verify
from shoal.durable import fsync_dir
from shoal.errors import ConflictError, DiskFullError
from shoal.log import (
    ENTRY_KEY_ROTATION,
    ENTRY_VERSION,
    ChainCheck,
    FileRef,
    HistoryError,
    LogEntry,
    LogState,
    ProductLog,
    canonical_json,
    file_sha256,
    now_iso,
)
from shoal.merkle import root_from_leaf_hashes
from shoal.names import is_valid_name
from shoal.products.store import META_PREFIX, ProductStore, rows_changed

__all__ = ["ProductHistory", "locked_product", "recover_all", "verify_history"]

log = logging.getLogger("shoal.products.history")

DELTA_LOG = "_delta_log"
ANNOUNCEMENT = "announcement"  # the commit-info key, under META_PREFIX


class ProductHistory:
    """The log of one product beside its Delta table."""

    def __init__(self, store: ProductStore, name: str) -> None:
        self.store = store
        self.name = name
        self.table_dir = store.table_dir(name)
        origin = f"{store.home.settings.name}/{name}"
        self.log = ProductLog(store.product_dir(name) / "log", origin, store.log_states)
        self.marker_path = self.log.directory / "publishing"
        self.legacy_pending_path = self.log.directory / "pending.json"
        # The announcement this object made (commit-info text and file hashes), if any.
        self._announced: tuple[str, dict[str, str]] | None = None

    # -- around a commit ----------------------------------------------------------------
    def begin(self) -> None:
        """Mark a publish as under way, before any of its files can reach the table.

        The marker is made durable at once (a sync of the log folder, about 0.3 ms here):
        ext4 and XFS would keep it ahead of the later renames anyway, but POSIX does not
        promise that, and a lost marker beside surviving renamed files would leave
        unknown files in the table after a power cut.
        """
        self.log.state()  # a log too damaged to read refuses the publish before it starts
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        try:
            fd = os.open(self.marker_path, flags, 0o644)
        except FileNotFoundError:  # the product's first publish
            self.log.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.marker_path, flags, 0o644)
        os.close(fd)
        fsync_dir(self.log.directory)

    def announce(self, version: int, files: Sequence[Path], key: NodeKey) -> dict[str, str]:
        """Give the commit-info entries that announce the coming commit as Shoal's own.

        `files` are the staged files the commit will add as they are (their SHA-256 is
        taken now, while they are in the page cache); a merge writes its own files, which
        are hashed from the table after the commit.
        """
        hashes = {path.name: file_sha256(path) for path in files}
        prev = self.log.state().last_leaf.hex()
        message = _announcement_message(self.log.origin, version, prev, hashes)
        signature = base64.b64encode(key.sign(message)).decode()
        text = canonical_json(
            {"files": hashes, "key_id": key.key_id, "prev": prev, "signature": signature}
        ).decode()
        self._announced = (text, hashes)
        return {ANNOUNCEMENT: text}

    def record(self, key: NodeKey) -> None:
        """After the commit: append its entry, sign the checkpoint, clear the marker."""
        self.catch_up(key)

    def catch_up(self, key: NodeKey) -> int:
        """Log the announced Delta commit if it is not logged yet; sign the checkpoint.

        Gives the number of entries added (0 or 1). Reads the log's files at most once per
        object: this runs after every publish.
        """
        state = self.log.state()
        if state.torn:
            self.log.repair()
            state = self.log.state()
        # A publish under way found no old announcement when it locked the product.
        legacy = self._legacy_pending() if self._announced is None else None
        added = 0
        last_logged = state.last.delta_version if state.last is not None else -1
        newer = self._commits_after(last_logged)
        if len(newer) == 1:
            commit_bytes = self.commit_path(newer[0]).read_bytes()
            actions = _actions(commit_bytes)
            hashes = self._announced_files(actions, state, legacy)
            if hashes is not None:
                entry = self.entry_for(newer[0], commit_bytes, actions, state, key, hashes)
                self.log.append(entry, key)
                added = 1
        if newer and not added:
            log.warning("%s: Delta commits %s were not announced; not logging", self.name, newer)
        publishing = self._announced is not None
        marked = publishing or self.marker_path.exists()
        checkpoint = state.checkpoint
        if state.size and (checkpoint is None or checkpoint.size != state.size):
            # A publish's marker becomes the new checkpoint: one rename ends the publish.
            via = self.marker_path if publishing and added else None
            self.log.sign_checkpoint(key, self.store.home.settings.name, via=via)
            marked = marked and via is None
        if marked or legacy is not None:
            if not added:
                # The announced publish never committed: drop the files it may have left.
                self.remove_orphans()
            self.marker_path.unlink(missing_ok=True)
            if legacy is not None:
                self.legacy_pending_path.unlink(missing_ok=True)
        self._announced = None
        return added

    def needs_catch_up(self) -> bool:
        """Tell cheaply whether a crash left work: a marker, a lagging log or checkpoint.

        A log too damaged to read is left for `verify` to report (and a publish refuses).
        """
        if self.marker_path.exists() or self.legacy_pending_path.exists():
            return True
        try:
            state = self.log.state()
        except HistoryError:
            return False
        if state.torn or (state.checkpoint.size if state.checkpoint else 0) != state.size:
            return True
        last_logged = state.last.delta_version if state.last is not None else -1
        return self.commit_path(last_logged + 1).exists()

    def record_key_rotation(self, old: NodeKey, new: NodeKey, signer: str) -> None:
        """Append a key-rotation entry signed by `old`; sign the checkpoint with `new`."""
        state = self.log.state()
        last = state.last
        entry = LogEntry(
            kind=ENTRY_KEY_ROTATION,
            product=self.name,
            seq=state.size,
            version=last.version if last else 0,
            delta_version=last.delta_version if last else -1,
            files_added=(),
            files_removed=(),
            commit_sha256="",
            schema_sha256=last.schema_sha256 if last else "",
            contract_sha256=last.contract_sha256 if last else "",
            rows_added=0,
            rows_removed=0,
            time=now_iso(),
            key_id=old.key_id,
            prev=state.last_leaf.hex(),
            new_key=base64.b64encode(new.public_bytes).decode(),
        )
        self.log.append(entry, old)
        self.log.sign_checkpoint(new, signer)

    def _announced_files(
        self, actions: list[dict[str, Any]], state: LogState, legacy: dict[str, Any] | None
    ) -> dict[str, str] | None:
        """The file hashes a commit's announcement names, or None if it has none valid.

        The announcement this process made is recognised verbatim; after a crash it must
        follow the log's last entry and be signed by one of the node's keys.
        """
        meta = _meta(actions)
        text = meta.get(ANNOUNCEMENT)
        if text is not None and self._announced is not None:
            return self._announced[1] if text == self._announced[0] else None
        if text is not None:
            return self._verified_files(text, meta.get("version", ""), state)
        if legacy is not None and meta.get("version") == str(legacy.get("version")):
            files: dict[str, str] = legacy.get("files") or {}
            return files
        return None

    def _verified_files(self, text: str, version: str, state: LogState) -> dict[str, str] | None:
        try:
            data = json.loads(text)
            hashes = {str(k): str(v) for k, v in data["files"].items()}
            prev, signature = str(data["prev"]), base64.b64decode(data["signature"])
            public = self.store.home.trusted_keys().get(str(data["key_id"]))
            message = _announcement_message(self.log.origin, int(version), prev, hashes)
        except (ValueError, KeyError, TypeError, AttributeError):
            return None
        if prev != state.last_leaf.hex() or public is None:
            return None
        return hashes if verify(public_key_from_bytes(public), signature, message) else None

    def _legacy_pending(self) -> dict[str, Any] | None:
        """The announcement a publish by an earlier Shoal left in `log/pending.json`.

        A torn one (the crash came while it was written: the commit never happened) reads
        as an announcement of nothing, so the files of that publish are still removed.
        """
        try:
            data = json.loads(self.legacy_pending_path.read_bytes())
        except FileNotFoundError:
            return None
        except ValueError:
            data = None
        return data if isinstance(data, dict) else {}

    def remove_orphans(self) -> None:
        """Delete data files that no Delta commit names (left by a publish that died)."""
        if not self.table_dir.exists():
            return
        named: set[str] = set()
        for version in self.delta_versions():
            commit = self.read_commit(version)
            named.update(action["add"]["path"] for action in commit if "add" in action)
            named.update(action["remove"]["path"] for action in commit if "remove" in action)
        named = {unquote(p) for p in named}
        for path in self.table_dir.iterdir():
            if path.is_file() and path.suffix == ".parquet" and path.name not in named:
                log.info("%s: removing %s, which no version names", self.name, path.name)
                path.unlink()

    # -- reading the Delta log ----------------------------------------------------------
    def delta_versions(self) -> list[int]:
        folder = self.table_dir / DELTA_LOG
        if not folder.exists():
            return []
        return sorted(int(path.stem) for path in folder.glob("*.json") if path.stem.isdigit())

    def _commits_after(self, delta_version: int) -> list[int]:
        """Delta versions after `delta_version`, probing file names (no folder listing)."""
        found = []
        version = delta_version + 1
        folder = os.fspath(self.table_dir / DELTA_LOG)
        while os.path.exists(f"{folder}/{version:020d}.json"):  # noqa: PTH110 (hot path)
            found.append(version)
            version += 1
        return found

    def commit_path(self, delta_version: int) -> Path:
        return self.table_dir / DELTA_LOG / f"{delta_version:020d}.json"

    def read_commit(self, delta_version: int) -> list[dict[str, Any]]:
        return _actions(self.commit_path(delta_version).read_bytes())

    def entry_for(
        self,
        delta_version: int,
        commit_bytes: bytes,
        actions: list[dict[str, Any]],
        state: LogState,
        key: NodeKey,
        known_hashes: dict[str, str],
    ) -> LogEntry:
        """Build the log entry describing one Delta commit (the log's next, after `state`)."""
        last = state.last
        meta = _meta(actions)
        # The whole log is read only when the commit removes files (to name their hashes).
        live = _files_by_path(self.log.entries()) if any("remove" in a for a in actions) else {}
        added = []
        for action in actions:
            if "add" in action:
                path = unquote(action["add"]["path"])
                digest = known_hashes.get(path) or file_sha256(self.table_dir / path)
                added.append(FileRef(path, digest, int(action["add"]["size"])))
        removed = []
        for action in actions:
            if "remove" in action:
                path = unquote(action["remove"]["path"])
                ref = live.get(path)
                if ref is None:
                    raise HistoryError(self.log.origin, f"Delta removes unknown file {path}")
                removed.append(ref)
        schema = next((a["metaData"]["schemaString"] for a in actions if "metaData" in a), None)
        schema_sha = (
            hashlib.sha256(schema.encode()).hexdigest()
            if schema is not None
            else (last.schema_sha256 if last else "")
        )
        info: dict[str, Any] = next((a["commitInfo"] for a in actions if "commitInfo" in a), {})
        millis = int(info.get("timestamp", 0))
        rows_added, rows_removed = rows_changed(info)
        return LogEntry(
            kind=ENTRY_VERSION,
            product=self.name,
            seq=state.size,
            version=int(meta.get("version", "0")),
            delta_version=delta_version,
            files_added=tuple(sorted(added, key=lambda f: f.path)),
            files_removed=tuple(sorted(removed, key=lambda f: f.path)),
            commit_sha256=hashlib.sha256(commit_bytes).hexdigest(),
            schema_sha256=schema_sha,
            contract_sha256=meta.get("contract_sha256", ""),
            rows_added=rows_added,
            rows_removed=rows_removed,
            time=datetime.fromtimestamp(millis / 1000, UTC).isoformat(timespec="milliseconds"),
            key_id=key.key_id,
            prev=state.last_leaf.hex(),
        )


@contextmanager
def locked_product(store: ProductStore, name: str) -> Iterator[ProductHistory]:
    """Hold the product's write lock with its history caught up (crash recovery)."""
    with store.locked(name):
        history = ProductHistory(store, name)
        if history.needs_catch_up():
            history.catch_up(store.home.key())
        yield history


def recover_all(store: ProductStore) -> None:
    """Complete or roll back what crashed publishes left, for every idle product."""
    if not store.root.exists():
        return
    for product_dir in sorted(store.root.iterdir()):
        if not product_dir.is_dir() or not is_valid_name(product_dir.name):
            continue
        history = ProductHistory(store, product_dir.name)
        if not history.needs_catch_up():
            continue
        try:
            with locked_product(store, product_dir.name):
                pass
        except ConflictError:
            continue  # a publish is running now; it finishes its own work
        except HistoryError as exc:
            log.warning("%s", exc)  # left for `verify` to report; the node still opens
        except OSError as exc:
            if not DiskFullError.explains(exc):
                raise
            # The node still opens to be read; the work waits for free space.
            log.warning("%s: cannot finish an interrupted publish: %s", product_dir.name, exc)


def _actions(commit_bytes: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in commit_bytes.splitlines() if line.strip()]


def _meta(actions: list[dict[str, Any]]) -> dict[str, str]:
    info: dict[str, Any] = next((a["commitInfo"] for a in actions if "commitInfo" in a), {})
    prefix = META_PREFIX
    return {k[len(prefix) :]: str(v) for k, v in info.items() if k.startswith(prefix)}


def _announcement_message(origin: str, version: int, prev: str, files: dict[str, str]) -> bytes:
    """The bytes an announcement signs: which commit, after which entry, with which files."""
    return canonical_json({"announce": origin, "files": files, "prev": prev, "version": version})


def _files_by_path(entries: list[LogEntry]) -> dict[str, FileRef]:
    live: dict[str, FileRef] = {}
    for entry in entries:
        for ref in entry.files_removed:
            live.pop(ref.path, None)
        for ref in entry.files_added:
            live[ref.path] = ref
    return live


def verify_history(history: ProductHistory, trusted: dict[str, bytes]) -> dict[str, Any]:
    """Re-check a product's whole history; raise HistoryError at the first bad entry.

    Per entry, in order: sequence, link and signature (following key rotations); the Delta
    commit file's hash; that the commit adds exactly the files the entry names; and each
    file it added, re-hashed (a file a later version removed may have been vacuumed).
    Then the tree is rebuilt and the latest checkpoint checked against it, and any Delta
    commit the log does not know is reported. Gives a summary for display.
    """
    origin = history.log.origin
    records = history.log.read()
    chain = ChainCheck(origin, trusted)
    live: dict[str, FileRef] = {}
    hashed_bytes = 0
    logged: set[int] = set()
    for entry, signature in records:
        chain.step(entry, signature)
        seq = entry.seq
        if entry.kind != ENTRY_VERSION:
            continue
        logged.add(entry.delta_version)
        where = f"version {entry.version}"
        commit_path = history.commit_path(entry.delta_version)
        if not commit_path.exists():
            raise HistoryError(origin, f"{where}: its Delta commit file is missing", seq=seq)
        commit_bytes = commit_path.read_bytes()
        if hashlib.sha256(commit_bytes).hexdigest() != entry.commit_sha256:
            raise HistoryError(origin, f"{where}: its Delta commit file was changed", seq=seq)
        actions = _actions(commit_bytes)
        in_commit = {unquote(a["add"]["path"]) for a in actions if "add" in a}
        named = {ref.path for ref in entry.files_added}
        if in_commit - named:
            extra = ", ".join(sorted(in_commit - named))
            raise HistoryError(origin, f"{where}: unknown file present: {extra}", seq=seq)
        for ref in entry.files_removed:
            live.pop(ref.path, None)
        for ref in entry.files_added:
            live[ref.path] = ref
    # Files are checked after the walk so that a file removed later may be missing.
    first_added: dict[str, tuple[LogEntry, FileRef]] = {}
    for entry, _ in records:
        for ref in entry.files_added:
            first_added.setdefault(ref.path, (entry, ref))
    for path, (entry, ref) in sorted(first_added.items(), key=lambda item: item[1][0].seq):
        target = history.table_dir / path
        where = f"version {entry.version}"
        if not target.exists():
            if path in live:
                raise HistoryError(origin, f"{where}: file missing: {path}", seq=entry.seq)
            continue
        if file_sha256(target) != ref.sha256:
            raise HistoryError(origin, f"{where}: file changed: {path}", seq=entry.seq)
        hashed_bytes += target.stat().st_size
    unlogged = [v for v in history.delta_versions() if v not in logged]
    if unlogged:
        raise HistoryError(origin, f"Delta version(s) {unlogged} are not in the signed log")
    if records and history.table_dir.exists():
        strays = sorted(
            p.name for p in history.table_dir.glob("*.parquet") if p.name not in first_added
        )
        if strays:
            last_entry = records[-1][0]
            raise HistoryError(
                origin,
                f"version {last_entry.version}: unknown file present: {', '.join(strays)}",
                seq=last_entry.seq,
            )
    hashes = [entry.leaf_hash() for entry, _ in records]
    root = root_from_leaf_hashes(hashes)
    checkpoint = history.log.checkpoint()
    if records:
        if checkpoint is None:
            raise HistoryError(origin, "the log has no checkpoint")
        if checkpoint.size != len(records) or checkpoint.root != root:
            raise HistoryError(
                origin, f"checkpoint does not match the log (size {checkpoint.size})"
            )
        if chain.key is None or not checkpoint.verify(public_key_from_bytes(chain.key), chain.key):
            raise HistoryError(origin, "checkpoint has a bad signature")
    return {
        "product": history.name,
        "entries": len(records),
        "version": max((e.version for e, _ in records), default=0),
        "files": len(live),
        "bytes_hashed": hashed_bytes,
        "root": root.hex(),
    }
