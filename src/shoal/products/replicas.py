"""Read-only copies of other nodes' products, verified before they become visible.

    replicas/<owner>/<product>/
      table/            the Delta table: the owner's commit files and data files, byte for byte
      log/entries.jsonl the owner's signed entries, as the owner wrote them
      log/checkpoint    the owner's signed checkpoint: the version this copy serves
      log/pulling       present only while a pulled version is being put in place
      contract.yaml     the owner's contract as of that checkpoint
      incoming/         downloads in progress (<sha256>.part) and finished (<sha256>)

A copy changes in one direction only, by `commit`: every file of the new versions (already
verified by the puller) is renamed into the table, then the entries are appended, then the
checkpoint is replaced. Readers pin the Delta version the checkpoint's last entry names, so
files of a version still being put in place are never read, and a crash halfway is undone by
`recover` (it cuts the log back to its checkpoint and deletes files no entry names).

Data files are re-hashed before they are served whenever their size, modification time or
inode changed since they were last verified, and on every scrub. A file that does not match
the owner's hash is moved to `<home>/quarantine/` and never served; the next pull fetches it
again.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from shoal.config import Home
from shoal.durable import atomic_write, fsync_dir
from shoal.errors import DiskFullError, NotFoundError, UnavailableError
from shoal.events import record_event
from shoal.log import (
    ENTRY_VERSION,
    Checkpoint,
    FileRef,
    HistoryError,
    LogEntry,
    ProductLog,
    file_sha256,
)
from shoal.names import check_name, is_valid_name
from shoal.products.store import ProductStore, Snapshot

__all__ = ["PulledVersions", "ReplicaStore", "live_files", "read_lines"]

log = logging.getLogger("shoal.replicas")

DELTA_LOG = "_delta_log"


@dataclass(frozen=True)
class PulledVersions:
    """What a puller verified and staged, ready to become visible in one step."""

    checkpoint: Checkpoint
    lines: tuple[bytes, ...]  # the new entries' lines, as the owner signed them
    entries: tuple[LogEntry, ...]
    commits: dict[int, Path]  # Delta version -> staged commit file
    files: dict[str, Path]  # table path -> staged data file
    contract: str


def commit_path(delta_version: int) -> str:
    """A Delta commit file's path inside the table."""
    return f"{DELTA_LOG}/{delta_version:020d}.json"


def live_files(entries: Iterable[LogEntry], delta_version: int | None = None) -> dict[str, FileRef]:
    """The data files a table has at `delta_version` (the last entry's if None)."""
    live: dict[str, FileRef] = {}
    for entry in entries:
        if delta_version is not None and entry.delta_version > delta_version:
            break
        for ref in entry.files_removed:
            live.pop(ref.path, None)
        for ref in entry.files_added:
            live[ref.path] = ref
    return live


def read_lines(product_log: ProductLog, start: int, end: int) -> list[bytes]:
    """The raw lines of entries `start` to `end` (exclusive) of a log."""
    if end <= start:
        return []
    raw = product_log.entries_path.read_bytes()
    lines = raw.split(b"\n")[:-1]  # a torn last line (no newline yet) is not an entry
    if len(lines) < end:
        raise HistoryError(product_log.origin, f"the log has {len(lines)} entries, not {end}")
    return lines[start:end]


class ReplicaStore:
    """The replicas this node holds, under `<home>/replicas/`."""

    def __init__(self, home: Home) -> None:
        self.home = home
        self.root = home.root / "replicas"
        self.quarantine = home.root / "quarantine"
        self._lock = threading.RLock()
        self._tables: dict[str, ProductStore] = {}  # owner -> a store over its copies
        # Files verified since they last changed: path -> (size, mtime_ns, inode).
        self._verified: dict[Path, tuple[int, int, int]] = {}

    # -- layout -------------------------------------------------------------------------
    def directory(self, owner: str, product: str) -> Path:
        return self.root / check_name(owner, "node") / check_name(product, "product")

    def log(self, owner: str, product: str) -> ProductLog:
        return ProductLog(self.directory(owner, product) / "log", f"{owner}/{product}")

    def table_dir(self, owner: str, product: str) -> Path:
        return self.directory(owner, product) / "table"

    def incoming(self, owner: str, product: str) -> Path:
        path = self.directory(owner, product) / "incoming"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def held(self) -> list[tuple[str, str]]:
        """Every copy with a visible version, as (owner, product)."""
        if not self.root.exists():
            return []
        found = []
        for owner in sorted(self.root.iterdir()):
            if not owner.is_dir() or not is_valid_name(owner.name):
                continue
            for product in sorted(owner.iterdir()):
                if is_valid_name(product.name) and (product / "log" / "checkpoint").exists():
                    found.append((owner.name, product.name))
        return found

    def holds(self, owner: str, product: str) -> bool:
        return (self.directory(owner, product) / "log" / "checkpoint").exists()

    def checkpoint(self, owner: str, product: str) -> Checkpoint | None:
        return self.log(owner, product).readable_checkpoint()

    def visible(self, owner: str, product: str) -> tuple[int, int, int]:
        """(tree size, Delta version, product version) this copy serves; (0, 0, 0) when
        it has none."""
        checkpoint = self.checkpoint(owner, product)
        if checkpoint is None or checkpoint.size == 0:
            return 0, 0, 0
        versions = [e for e in self.entries(owner, product) if e.kind == ENTRY_VERSION]
        if not versions:
            return checkpoint.size, 0, 0
        return checkpoint.size, versions[-1].delta_version, versions[-1].version

    def entries(self, owner: str, product: str) -> list[LogEntry]:
        """The entries up to the checkpoint (what this copy serves)."""
        checkpoint = self.checkpoint(owner, product)
        if checkpoint is None:
            return []
        return self.log(owner, product).entries()[: checkpoint.size]

    def contract_text(self, owner: str, product: str) -> str:
        path = self.directory(owner, product) / "contract.yaml"
        try:
            return path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise NotFoundError(f"no replica of {owner}.{product} here") from None

    # -- reading ------------------------------------------------------------------------
    def snapshot(self, owner: str, product: str, delta_version: int | None = None) -> Snapshot:
        """The copy at a Delta version it serves (its newest if None), its files verified."""
        size, newest, _ = self.visible(owner, product)
        if size == 0:
            raise NotFoundError(
                f"node '{self.home.settings.name}' holds no copy of {owner}.{product}"
            )
        version = newest if delta_version is None else delta_version
        if version > newest:
            raise NotFoundError(
                f"the copy of {owner}.{product} on node '{self.home.settings.name}' is at "
                f"Delta version {newest}, not {version} yet"
            )
        entries = self.entries(owner, product)
        if not any(e.delta_version == version for e in entries if e.kind == ENTRY_VERSION):
            raise NotFoundError(f"{owner}.{product} has no Delta version {version}")
        bad = self.check_files(owner, product, live_files(entries, version).values(), quick=True)
        if bad:
            raise UnavailableError(
                f"the copy of {owner}.{product} on node '{self.home.settings.name}' failed "
                f"its hash check ({', '.join(bad)}); it was quarantined and will be fetched "
                "again",
            )
        return self._store(owner).snapshot(product, version)

    def _store(self, owner: str) -> ProductStore:
        with self._lock:
            store = self._tables.get(owner)
            if store is None:
                store = self._tables[owner] = ProductStore(self.home, self.root / owner)
            return store

    # -- checking -----------------------------------------------------------------------
    def check_files(
        self, owner: str, product: str, refs: Iterable[FileRef], *, quick: bool
    ) -> list[str]:
        """Hash the copy's files (with `quick`, only those changed since last verified);
        quarantine and name each one that is missing or wrong."""
        return self.check_table(self.table_dir(owner, product), owner, product, refs, quick=quick)

    def check_table(
        self, table: Path, owner: str, product: str, refs: Iterable[FileRef], *, quick: bool
    ) -> list[str]:
        """`check_files` for any table folder (an own product's too)."""
        bad = []
        for ref in refs:
            path = table / ref.path
            try:
                stat = path.stat()
            except FileNotFoundError:
                bad.append(ref.path)
                continue
            stamp = (stat.st_size, stat.st_mtime_ns, stat.st_ino)
            if quick and self._verified.get(path) == stamp:
                continue
            if stat.st_size == ref.size and file_sha256(path) == ref.sha256:
                self._verified[path] = stamp
                continue
            self._verified.pop(path, None)
            self._quarantine(owner, product, path, ref)
            bad.append(ref.path)
        return bad

    def scrub(self, owner: str, product: str) -> list[str]:
        """Re-hash every file the copy serves; gives the paths found bad (quarantined)."""
        return self.check_files(
            owner, product, live_files(self.entries(owner, product)).values(), quick=False
        )

    def _quarantine(self, owner: str, product: str, path: Path, ref: FileRef) -> None:
        folder = self.quarantine / owner / product
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{time.strftime('%Y%m%dT%H%M%S')}-{path.name}"
        try:
            path.replace(target)
        except FileNotFoundError:
            return
        record_event(
            self.home,
            "file-quarantined",
            product=f"{owner}.{product}",
            file=ref.path,
            moved_to=str(target.relative_to(self.home.root)),
        )
        log.error(
            "%s.%s: file %s does not match its signed hash; moved to %s",
            owner,
            product,
            ref.path,
            target,
        )

    def missing(self, owner: str, product: str) -> dict[str, FileRef]:
        """Files the copy serves that are not in its table (quarantined or lost)."""
        table = self.table_dir(owner, product)
        return {
            path: ref
            for path, ref in live_files(self.entries(owner, product)).items()
            if not (table / path).exists()
        }

    # -- changing -----------------------------------------------------------------------
    def commit(self, owner: str, product: str, pulled: PulledVersions) -> None:
        """Make pulled, verified versions visible: files, then entries, then checkpoint."""
        folder = self.directory(owner, product)
        log_dir = folder / "log"
        table = folder / "table"
        (table / DELTA_LOG).mkdir(parents=True, exist_ok=True)
        log_dir.mkdir(parents=True, exist_ok=True)
        marker = log_dir / "pulling"
        marker.touch()
        fsync_dir(log_dir)
        for path, staged in pulled.files.items():
            target = table / path
            target.parent.mkdir(parents=True, exist_ok=True)
            staged.replace(target)
            stat = target.stat()
            self._verified[target] = (stat.st_size, stat.st_mtime_ns, stat.st_ino)
        for delta_version, staged in sorted(pulled.commits.items()):
            staged.replace(table / commit_path(delta_version))
        fsync_dir(table)
        fsync_dir(table / DELTA_LOG)
        if pulled.lines:
            fd = os.open(log_dir / "entries.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                os.write(fd, b"".join(line + b"\n" for line in pulled.lines))
                os.fdatasync(fd)
            finally:
                os.close(fd)
        atomic_write(folder / "contract.yaml", pulled.contract.encode("utf-8"))
        atomic_write(log_dir / "checkpoint", pulled.checkpoint.note().encode("utf-8"))
        marker.unlink()

    def repair_files(self, owner: str, product: str, files: dict[str, Path]) -> None:
        """Put refetched (verified) files back in place of quarantined ones."""
        table = self.table_dir(owner, product)
        for path, staged in files.items():
            target = table / path
            target.parent.mkdir(parents=True, exist_ok=True)
            staged.replace(target)
            stat = target.stat()
            self._verified[target] = (stat.st_size, stat.st_mtime_ns, stat.st_ino)
        fsync_dir(table)

    def recover(self) -> None:
        """Undo what a pull that died halfway left: entries past the checkpoint, commit
        files and data files of the versions it did not finish."""
        for owner, product in self._with_marker():
            folder = self.directory(owner, product)
            product_log = self.log(owner, product)
            checkpoint = product_log.readable_checkpoint()
            size = checkpoint.size if checkpoint is not None else 0
            lines = read_lines(product_log, 0, product_log.size())[:size]
            tmp = product_log.entries_path.with_name(".entries.recover")
            tmp.write_bytes(b"".join(line + b"\n" for line in lines))
            tmp.replace(product_log.entries_path)
            entries = self.entries(owner, product)
            named = {commit_path(e.delta_version) for e in entries if e.kind == ENTRY_VERSION}
            named |= {ref.path for e in entries for ref in e.files_added}
            table = folder / "table"
            for path in _files_under(table):
                relative = path.relative_to(table).as_posix()
                if relative not in named:
                    path.unlink()
            (folder / "log" / "pulling").unlink()
            log.warning("%s.%s: undid a pull that stopped halfway", owner, product)

    def _with_marker(self) -> Iterator[tuple[str, str]]:
        if not self.root.exists():
            return
        for marker in sorted(self.root.glob("*/*/log/pulling")):
            product_dir = marker.parent.parent
            yield product_dir.parent.name, product_dir.name

    def drop(self, owner: str, product: str) -> None:
        """Delete a copy (it is no longer wanted here, or may not live here)."""
        with self._lock:
            self._tables.pop(owner, None)
        shutil.rmtree(self.directory(owner, product), ignore_errors=True)


def _files_under(folder: Path) -> Iterator[Path]:
    if not folder.exists():
        return
    for path in folder.rglob("*"):
        if path.is_file():
            yield path


def disk_full(product: str, folder: Path) -> DiskFullError:
    """A clear error for a copy that ran out of disk."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = 0
    return DiskFullError(
        f"no space left on the disk holding the copy of {product} "
        f"({free / 2**20:.1f} MiB free); the copy stays at the version it had",
        product=product,
        folder=str(folder),
        hint="free some space; the copy resumes on its own",
    )
