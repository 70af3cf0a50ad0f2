"""A product's signed history: every Delta commit Shoal makes becomes a log entry.

The publish pipeline and crash recovery share one path: after the Delta commit (or when a
product is next locked, if the process died right after it), `ProductHistory.catch_up`
records the commit as a signed log entry and signs a new checkpoint.

Before a commit the pipeline writes `log/pending.json` (the version it is about to make and
the SHA-256 of each staged file, fsynced). Recovery completes only the one commit that
pending names; a Delta commit nobody announced is left unlogged for `verify` to report,
never signed. Files in the table folder that no version names (a publish that died before
its commit) are removed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from shoal.crypto import NodeKey, public_key_from_bytes
from shoal.durable import fsync_dir
from shoal.errors import ConflictError
from shoal.log import (
    ENTRY_KEY_ROTATION,
    ENTRY_VERSION,
    ChainCheck,
    FileRef,
    HistoryError,
    LogEntry,
    ProductLog,
    canonical_json,
    file_sha256,
    now_iso,
)
from shoal.merkle import root_from_leaf_hashes
from shoal.names import is_valid_name
from shoal.products.store import ProductStore, rows_changed

__all__ = ["ProductHistory", "locked_product", "recover_all", "verify_history"]

log = logging.getLogger("shoal.products.history")

DELTA_LOG = "_delta_log"


class ProductHistory:
    """The log of one product beside its Delta table."""

    def __init__(self, store: ProductStore, name: str) -> None:
        self.store = store
        self.name = name
        self.table_dir = store.table_dir(name)
        self.log = ProductLog(store.product_dir(name) / "log", f"{store.home.settings.name}/{name}")

    @property
    def pending_path(self) -> Path:
        return self.log.directory / "pending.json"

    # -- around a commit ----------------------------------------------------------------
    def announce(self, version: int, file_hashes: dict[str, str]) -> None:
        """Record, durably, the version about to be committed and its staged files."""
        self.log.directory.mkdir(parents=True, exist_ok=True)
        data = canonical_json({"version": version, "files": file_hashes})
        # Written in place (no rename): a file torn by a crash while being written means
        # the commit never happened, which is how an unreadable announcement is read.
        fd = os.open(self.pending_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
            os.fdatasync(fd)
        finally:
            os.close(fd)
        fsync_dir(self.log.directory)

    def catch_up(self, key: NodeKey) -> int:
        """Log the announced Delta commit if it is not logged yet; sign the checkpoint.

        Gives the number of entries added (0 or 1). Reads the log once: this runs after
        every publish.
        """
        self.log.repair()
        last = self.log.last_entry()
        size = self.log.size()
        pending = self._pending()
        added = 0
        last_logged = last.delta_version if last is not None else -1
        newer = self._commits_after(last_logged)
        if newer and pending is not None:
            if len(newer) == 1 and _meta(self.read_commit(newer[0])).get("version") == str(
                pending["version"]
            ):
                entry = self.entry_for(newer[0], last, size, key, pending["files"])
                self.log.append(entry, key)
                size += 1
                added = 1
            else:
                log.warning(
                    "%s: Delta commits %s were not announced; not logging", self.name, newer
                )
        checkpoint = self.log.readable_checkpoint()
        if size and (checkpoint is None or checkpoint.size != size):
            self.log.sign_checkpoint(key, self.store.home.settings.name)
        if pending is not None or self.pending_path.exists():
            if not added:
                # The announced publish never committed: drop the files it may have left.
                self.remove_orphans()
            self.pending_path.unlink(missing_ok=True)
        return added

    def needs_catch_up(self) -> bool:
        """Tell cheaply whether a crash left work: an announcement, or a lagging log."""
        if self.pending_path.exists():
            return True
        entries_path = self.log.entries_path
        if entries_path.exists() and not entries_path.read_bytes().endswith(b"\n"):
            return True
        checkpoint = self.log.readable_checkpoint()
        return (checkpoint.size if checkpoint else 0) != self.log.size()

    def record_key_rotation(self, old: NodeKey, new: NodeKey, signer: str) -> None:
        """Append a key-rotation entry signed by `old`; sign the checkpoint with `new`."""
        entries = self.log.entries()
        last = entries[-1] if entries else None
        entry = LogEntry(
            kind=ENTRY_KEY_ROTATION,
            product=self.name,
            seq=len(entries),
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
            prev=last.leaf_hash().hex() if last else "",
            new_key=base64.b64encode(new.public_bytes).decode(),
        )
        self.log.append(entry, old)
        self.log.sign_checkpoint(new, signer)

    def _pending(self) -> dict[str, Any] | None:
        if not self.pending_path.exists():
            return None
        try:
            data: dict[str, Any] = json.loads(self.pending_path.read_bytes())
        except ValueError:
            return None  # torn by a crash while being written: the commit never happened
        return data

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
        while self.commit_path(version).exists():
            found.append(version)
            version += 1
        return found

    def commit_path(self, delta_version: int) -> Path:
        return self.table_dir / DELTA_LOG / f"{delta_version:020d}.json"

    def read_commit(self, delta_version: int) -> list[dict[str, Any]]:
        raw = self.commit_path(delta_version).read_bytes()
        return [json.loads(line) for line in raw.splitlines() if line.strip()]

    def entry_for(
        self,
        delta_version: int,
        last: LogEntry | None,
        size: int,
        key: NodeKey,
        known_hashes: dict[str, str],
    ) -> LogEntry:
        """Build the log entry describing one Delta commit (the log's next, at `size`)."""
        commit_bytes = self.commit_path(delta_version).read_bytes()
        actions = [json.loads(line) for line in commit_bytes.splitlines() if line.strip()]
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
            seq=size,
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
            prev=last.leaf_hash().hex() if last else "",
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


def _meta(actions: list[dict[str, Any]]) -> dict[str, str]:
    info: dict[str, Any] = next((a["commitInfo"] for a in actions if "commitInfo" in a), {})
    return {k[len("shoal.") :]: str(v) for k, v in info.items() if k.startswith("shoal.")}


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
        actions = [json.loads(line) for line in commit_bytes.splitlines() if line.strip()]
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
