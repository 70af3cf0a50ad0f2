"""The product store: one Delta Lake table per product under the node home.

    products/<name>/
      table/              the Delta Lake table (readable by any Delta reader)
      contract.yaml       the product's current data contract (ODCS YAML)
      contract.yaml.next  a contract waiting for its publish to commit (crash recovery)

Every publish is one Delta commit whose commit info carries Shoal's own facts under
`shoal.*` keys (version number, mode, rows added and removed, contract version), so the
history needs no second file that could disagree with the table.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads
from deltalake import DeltaTable

from shoal.config import Home
from shoal.contracts import Contract, dump_contract, load_contract
from shoal.durable import atomic_write
from shoal.errors import ConflictError, NotFoundError, ShoalError
from shoal.log import LogState
from shoal.names import check_name

__all__ = ["ProductInfo", "ProductStore", "Snapshot", "VersionInfo", "rows_changed"]

META_PREFIX = "shoal."
# A Delta commit file: `_delta_log/<20-digit version>.json` exists only once committed.
_COMMIT_FILE = re.compile(r"^(\d{20})\.json$")
SNAPSHOTS_KEPT = 64


@dataclass(frozen=True)
class VersionInfo:
    """One version of a product, as `shoal history` shows it."""

    version: int
    delta_version: int
    time: str
    mode: str
    rows_added: int
    rows_removed: int
    files_added: int
    files_removed: int
    contract_version: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ProductInfo:
    """A product's summary, as `shoal products` and `shoal describe` show it."""

    name: str
    owner: str
    version: int
    rows: int
    files: int
    size_bytes: int
    last_publish: str
    contract_version: str
    contract_status: str
    columns: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Snapshot:
    """One Delta version of a product, opened for queries."""

    delta_version: int
    dataset: pads.Dataset
    rows: int


def _older_than(path: Path, seconds: float) -> bool:
    try:
        return time.time() - path.stat().st_mtime > seconds
    except OSError:
        return False


class ProductStore:
    """Reads and lays out the products of one node home."""

    def __init__(self, home: Home, root: Path | None = None) -> None:
        self.home = home
        # Another root holds other nodes' products in the same layout (see replicas.py).
        self.root = home.products_dir if root is None else root
        # Opened Delta versions for queries, most recently used last: a version never
        # changes, and opening a table costs milliseconds, more than a small query.
        self._snapshots: OrderedDict[tuple[str, int], Snapshot] = OrderedDict()
        self._snapshots_lock = threading.Lock()
        # Each product log's state, kept between publishes (checked against the files).
        self.log_states: dict[Path, LogState] = {}

    # -- layout -------------------------------------------------------------------------
    def product_dir(self, name: str) -> Path:
        return self.root / check_name(name, "product")

    def table_dir(self, name: str) -> Path:
        return self.product_dir(name) / "table"

    def contract_path(self, name: str) -> Path:
        return self.product_dir(name) / "contract.yaml"

    def exists(self, name: str) -> bool:
        return DeltaTable.is_deltatable(str(self.table_dir(name)))

    def names(self) -> list[str]:
        if not self.root.exists():
            return []
        return sorted(
            child.name
            for child in self.root.iterdir()
            if child.is_dir() and DeltaTable.is_deltatable(str(child / "table"))
        )

    # -- locking and recovery -----------------------------------------------------------
    @contextmanager
    def locked(self, name: str) -> Iterator[None]:
        """Hold the product's write lock; a second writer is refused, not queued."""
        # Locks live outside products/ so a failed first publish leaves no product folder.
        locks = self.home.root / "locks"
        locks.mkdir(exist_ok=True)
        fd = os.open(locks / f"{check_name(name, 'product')}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise ConflictError(
                    f"another publish or contract change of '{name}' is running; try again"
                ) from exc
            self._finish_contract_switch(name)
            yield
        finally:
            os.close(fd)

    def sweep_staging(self) -> None:
        """Remove scratch folders of publishes that died; live publishes hold their lock."""
        tmp = self.home.tmp_dir
        if not tmp.exists():
            return
        for child in tmp.iterdir():
            # Scratch folders are named <purpose>-<product>-<random> (see Home.new_tmp_dir).
            product = child.name.partition("-")[2].rpartition("-")[0]
            if not (self.home.root / "locks" / f"{product}.lock").exists():
                if _older_than(child, 24 * 3600):
                    shutil.rmtree(child, ignore_errors=True)
                continue
            try:
                with self.locked(product):
                    shutil.rmtree(child, ignore_errors=True)
            except ConflictError:
                continue  # a publish of that product is running now

    def _finish_contract_switch(self, name: str) -> None:
        """Complete or drop a contract left waiting by a publish that crashed.

        The waiting contract belongs to the table's latest commit when that commit names its
        hash; otherwise the publish never committed and the waiting file is dropped.
        """
        pending = self.contract_path(name).with_suffix(".yaml.next")
        if not pending.exists():
            return
        digest = hashlib.sha256(pending.read_bytes()).hexdigest()
        committed = self.exists(name) and self._latest_meta(name).get("contract_sha256") == digest
        if committed:
            pending.replace(self.contract_path(name))
        else:
            pending.unlink()

    # -- reading ------------------------------------------------------------------------
    def table(self, name: str, version: int | None = None) -> DeltaTable:
        """Open the product's Delta table, at a Shoal version when given."""
        if not self.exists(name):
            raise NotFoundError(f"no product '{name}' on node '{self.home.settings.name}'")
        table = DeltaTable(str(self.table_dir(name)))
        if version is not None:
            table.load_as_version(self._delta_version_of(name, version))
        return table

    def dataset(self, name: str, version: int | None = None) -> pads.Dataset:
        """Give the product (at a version) as an Arrow dataset that DuckDB can scan."""
        return self.table(name, version).to_pyarrow_dataset()

    def table_at(self, name: str, delta_version: int) -> DeltaTable:
        """Open the product's Delta table at a Delta version (what fragments pin)."""
        if not self.exists(name):
            raise NotFoundError(f"no product '{name}' on node '{self.home.settings.name}'")
        try:
            return DeltaTable(str(self.table_dir(name)), version=delta_version)
        except Exception as exc:
            raise NotFoundError(
                f"product '{name}' has no table version {delta_version} on node "
                f"'{self.home.settings.name}'"
            ) from exc

    def latest_delta_version(self, name: str) -> int | None:
        """The newest committed Delta version of the product, None if it has none.

        Read from the commit files' names, which is cheaper than opening the table and is
        exact: a commit file appears only when its commit is complete.
        """
        try:
            entries = os.scandir(self.table_dir(name) / "_delta_log")
        except (FileNotFoundError, NotADirectoryError):
            return None
        with entries:
            found = (_COMMIT_FILE.match(entry.name) for entry in entries)
            return max((int(m.group(1)) for m in found if m is not None), default=None)

    def snapshot(self, name: str, delta_version: int | None = None) -> Snapshot:
        """The product at a Delta version (the latest if None), as queries read it. Opened
        versions are kept (LRU): a version never changes."""
        version = self.latest_delta_version(name) if delta_version is None else delta_version
        if version is None:
            raise NotFoundError(f"no product '{name}' on node '{self.home.settings.name}'")
        key = (check_name(name, "product"), version)
        with self._snapshots_lock:
            found = self._snapshots.get(key)
            if found is not None:
                self._snapshots.move_to_end(key)
                return found
        table = self.table_at(name, version)
        actions = pa.table(table.get_add_actions(flatten=True))
        rows = int(pa.compute.sum(actions["num_records"]).as_py() or 0) if actions.num_rows else 0
        found = Snapshot(version, table.to_pyarrow_dataset(), rows)
        with self._snapshots_lock:
            self._snapshots[key] = found
            while len(self._snapshots) > SNAPSHOTS_KEPT:
                self._snapshots.popitem(last=False)
        return found

    def contract(self, name: str) -> Contract:
        path = self.contract_path(name)
        if not path.exists():
            raise NotFoundError(f"product '{name}' has no contract")
        return load_contract(path.read_text(encoding="utf-8"))

    def contract_text(self, name: str) -> str:
        self.contract(name)  # validates and gives NotFoundError when missing
        return self.contract_path(name).read_text(encoding="utf-8")

    def write_contract(self, name: str, contract: Contract) -> None:
        atomic_write(self.contract_path(name), dump_contract(contract).encode("utf-8"))

    def history(self, name: str) -> list[VersionInfo]:
        """Every published version, oldest first."""
        table = self.table(name)
        versions: list[VersionInfo] = []
        for commit in table.history():
            meta = _shoal_meta(commit)
            if "version" not in meta:
                continue  # a commit Shoal did not make (e.g. maintenance by another tool)
            metrics = commit.get("operationMetrics") or {}
            rows_added, rows_removed = rows_changed(commit)
            versions.append(
                VersionInfo(
                    version=int(meta["version"]),
                    delta_version=int(commit["version"]),
                    time=_iso(int(commit["timestamp"])),
                    mode=str(meta.get("mode", "")),
                    rows_added=rows_added,
                    rows_removed=rows_removed,
                    files_added=int(
                        meta.get(
                            "files_added",
                            metrics.get(
                                "num_added_files", metrics.get("num_target_files_added", 0)
                            ),
                        )
                    ),
                    files_removed=int(
                        meta.get(
                            "files_removed",
                            metrics.get(
                                "num_removed_files", metrics.get("num_target_files_removed", 0)
                            ),
                        )
                    ),
                    contract_version=str(meta.get("contract_version", "")),
                )
            )
        return sorted(versions, key=lambda item: item.version)

    def latest_version(self, name: str) -> int:
        return int(self._latest_meta(name).get("version", 0)) if self.exists(name) else 0

    def info(self, name: str) -> ProductInfo:
        table = self.table(name)
        actions = pa.table(table.get_add_actions(flatten=True))
        rows = int(pa.compute.sum(actions["num_records"]).as_py() or 0) if actions.num_rows else 0
        size = int(pa.compute.sum(actions["size_bytes"]).as_py() or 0) if actions.num_rows else 0
        history = self.history(name)
        contract = self.contract(name)
        return ProductInfo(
            name=name,
            owner=self.home.settings.name,
            version=history[-1].version if history else 0,
            rows=rows,
            files=actions.num_rows,
            size_bytes=size,
            last_publish=history[-1].time if history else "",
            contract_version=contract.version,
            contract_status=str(contract.status),
            columns=contract.columns_summary(),
        )

    def _latest_meta(self, name: str) -> dict[str, str]:
        table = DeltaTable(str(self.table_dir(name)))
        history = table.history(1)
        return _shoal_meta(history[0]) if history else {}

    def _delta_version_of(self, name: str, version: int) -> int:
        for item in self.history(name):
            if item.version == version:
                return item.delta_version
        latest = self.latest_version(name)
        raise NotFoundError(f"product '{name}' has no version {version} (latest is {latest})")


def rows_changed(commit_info: dict[str, Any]) -> tuple[int, int]:
    """Give (rows added, rows removed) of a commit; a merge only knows them afterwards,
    from its own metrics (an updated row counts as one removed and one added)."""
    meta = commit_info
    if f"{META_PREFIX}rows_added" in meta:
        return int(meta[f"{META_PREFIX}rows_added"]), int(meta.get(f"{META_PREFIX}rows_removed", 0))
    metrics = commit_info.get("operationMetrics") or {}
    if isinstance(metrics, str):
        metrics = json.loads(metrics)
    inserted = int(metrics.get("num_target_rows_inserted", 0))
    updated = int(metrics.get("num_target_rows_updated", 0))
    deleted = int(metrics.get("num_target_rows_deleted", 0))
    return inserted + updated, updated + deleted


def _shoal_meta(commit: dict[str, Any]) -> dict[str, str]:
    """Pick Shoal's own keys out of a Delta commit info."""
    meta = {k[len(META_PREFIX) :]: v for k, v in commit.items() if k.startswith(META_PREFIX)}
    if "version" not in meta:
        return {}
    return {
        key: value if isinstance(value, str) else json.dumps(value) for key, value in meta.items()
    }


def _iso(millis: int) -> str:
    return datetime.fromtimestamp(millis / 1000, UTC).isoformat(timespec="seconds")


def delta_error(exc: Exception, name: str) -> ShoalError:
    """Turn a Delta Lake error during a commit into a user-facing error."""
    text = str(exc)
    if "already exists" in text or "Conflict" in text or "concurrent" in text.lower():
        return ConflictError(f"another writer changed '{name}' at the same time; try again")
    return ShoalError(f"could not write product '{name}': {text.splitlines()[0]}")
