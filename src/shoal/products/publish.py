"""The publish pipeline: source batches -> contract check -> one new Delta version.

    reader (Arrow batches, streamed)
      -> conform to the contract's schema (casts; type failures counted)
      -> staged Parquet files in the home's tmp/ (bounded memory)
      -> row rules checked by DuckDB over the staged files (and the product after publish)
      -> one Delta commit (staged files renamed into the table, or a merge for upsert),
         announced in its own commit info (see `shoal.products.history`)
      -> contract switched, the commit logged and the checkpoint signed, scratch removed

A publish that fails at any step leaves the table, its files and its contract as they were:
nothing reaches the table folder before the checks pass, and the contract is only switched
after the commit (see `ProductStore._finish_contract_switch` for the crash case).

A full disk is reported as `DiskFullError`. Before the commit the publish is rolled back
(staged files, renamed files, waiting contract, marker); once the commit is in the Delta
log the version stands, even if delta-rs failed after it, and a log entry that could not
be written is left to crash recovery, as after a crash.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from deltalake import DeltaTable, Schema, write_deltalake
from deltalake.exceptions import DeltaError
from deltalake.transaction import (
    AddAction,
    CommitProperties,
    RemoveAction,
    create_table_with_add_actions,
)

from shoal.contracts import (
    Contract,
    ContractCheck,
    check_evolution,
    dump_contract,
    infer_contract,
    null_counts,
    with_required,
)
from shoal.durable import atomic_write
from shoal.engine import quote_identifier, trusted_connection
from shoal.errors import ConflictError, ContractViolation, DiskFullError, RuleFailure, UsageError
from shoal.products.history import ANNOUNCEMENT, ProductHistory, locked_product
from shoal.products.store import META_PREFIX, ProductStore, delta_error, rows_changed

__all__ = ["Mode", "PublishResult", "check_current_data", "publish"]

log = logging.getLogger("shoal.products.publish")

Progress = Callable[[int], None]
"""Called with the number of rows read so far."""


class Mode(StrEnum):
    APPEND = "append"
    OVERWRITE = "overwrite"
    UPSERT = "upsert"


@dataclass(frozen=True)
class PublishResult:
    product: str
    version: int
    mode: str
    rows_added: int
    rows_removed: int
    rows_total: int
    files_added: int
    seconds: float
    contract_version: str
    contract_inferred: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def publish(
    store: ProductStore,
    name: str,
    reader: pa.RecordBatchReader,
    *,
    mode: Mode = Mode.APPEND,
    key: Sequence[str] | None = None,
    contract: Contract | None = None,
    source_kind: str = "",
    progress: Progress | None = None,
) -> PublishResult:
    """Publish the batches of `reader` as the next version of product `name`."""
    try:
        return _publish(store, name, reader, mode, key, contract, source_kind, progress)
    except Exception as exc:
        if DiskFullError.explains(exc):  # raised before the commit: nothing was published
            raise _disk_full(store, name, committed=None) from exc
        raise


def _publish(
    store: ProductStore,
    name: str,
    reader: pa.RecordBatchReader,
    mode: Mode,
    key: Sequence[str] | None,
    contract: Contract | None,
    source_kind: str,
    progress: Progress | None,
) -> PublishResult:
    started = time.perf_counter()
    with locked_product(store, name) as history:
        exists = store.exists(name)
        # One open of the Delta table per publish: each open replays its log.
        table = store.table(name) if exists else None
        rows_before = _row_count(table) if table is not None else 0
        current = store.contract(name) if exists else None
        inferred = False
        if contract is None:
            if current is None:
                contract = infer_contract(name, store.home.settings.name, reader.schema)
                inferred = True
            else:
                contract = current
        elif current is not None:
            check_evolution(current, contract)
        keys = _upsert_keys(mode, key, contract, exists)

        staging = store.home.new_tmp_dir(f"publish-{name}-")
        try:
            staged = _stage(reader, contract, staging, store, name, progress)
            if inferred and staged.rows:  # with no rows, no column has shown it is never null
                with trusted_connection() as con:
                    _register_new_rows(con, staged, staged.schema)
                    counts = null_counts(con, "new_rows", staged.schema.names)
                contract = with_required(contract, [c for c, n in counts.items() if n == 0])
            _check_rows(store, name, contract, staged, mode, keys, table)
            new_version = _latest_version(table) + 1
            contract_bytes = dump_contract(contract).encode("utf-8")
            meta = {
                "version": new_version,
                "mode": mode.value,
                "contract_version": contract.version,
                "contract_sha256": hashlib.sha256(contract_bytes).hexdigest(),
                "source": source_kind,
            }
            pending = store.contract_path(name).with_suffix(".yaml.next")
            contract_changed = current is None or dump_contract(current) != dump_contract(contract)
            store.product_dir(name).mkdir(parents=True, exist_ok=True)
            node_key = store.home.key()
            try:
                if contract_changed:
                    atomic_write(pending, contract_bytes)
                history.begin()
                for path in staged.files:
                    _flush_to_disk(path)  # the commit will point at them: data first, always
                schema_changed = table is not None and not _same_schema(table, staged.schema)
                rewrites = table is not None and (
                    mode is Mode.UPSERT or (schema_changed and mode is Mode.APPEND)
                )
                meta.update(
                    history.announce(new_version, [] if rewrites else staged.files, node_key)
                )
                added, removed = _commit(store, name, staged, mode, keys, table, meta, rewrites)
            except BaseException as exc:
                landed = _landed(history, table, meta)
                if landed is None:
                    _roll_back(store, name, history, staged, pending, exists)
                if landed is None or not isinstance(exc, Exception):
                    # An interrupt after the commit is a crash: the marker stays for recovery.
                    if isinstance(exc, DeltaError) and not DiskFullError.explains(exc):
                        raise delta_error(exc, name) from exc
                    raise
                log.warning(
                    "%s: version %d is committed; delta-rs then failed: %s", name, new_version, exc
                )
                added, removed = rows_changed(landed)
            if contract_changed:
                pending.replace(store.contract_path(name))
            try:
                # Should this fail, the marker stays and the next lock of the product logs it.
                history.record(node_key)
            except Exception as exc:
                if DiskFullError.explains(exc):
                    raise _disk_full(store, name, committed=new_version) from exc
                raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        total = rows_before + added - removed
    return PublishResult(
        product=name,
        version=new_version,
        mode=mode.value,
        rows_added=added,
        rows_removed=removed,
        rows_total=total,
        files_added=len(staged.files),
        seconds=time.perf_counter() - started,
        contract_version=contract.version,
        contract_inferred=inferred,
    )


def _landed(
    history: ProductHistory, table: DeltaTable | None, meta: dict[str, Any]
) -> dict[str, Any] | None:
    """The commit info of the commit this publish announced, if it is in the Delta log.

    A failed commit call does not prove that nothing was committed: delta-rs writes a
    checkpoint after every 100th commit and reports its failure as the commit's.
    """
    announcement = meta.get(ANNOUNCEMENT)
    if announcement is None:  # stopped before it announced: it cannot have committed
        return None
    latest = history.store.latest_delta_version(history.name)
    if latest is None:
        return None
    for delta_version in range(table.version() + 1 if table is not None else 0, latest + 1):
        actions = history.read_commit(delta_version)
        info: dict[str, Any] = next((a["commitInfo"] for a in actions if "commitInfo" in a), {})
        if info.get(f"{META_PREFIX}{ANNOUNCEMENT}") == announcement:
            return info
    return None


def _roll_back(
    store: ProductStore,
    name: str,
    history: ProductHistory,
    staged: _Staged,
    pending: Path,
    existed: bool,
) -> None:
    """Undo a publish whose commit never landed: its files, waiting contract and marker.

    Should this fail too, what is left is what a crash leaves: the marker stays and the
    next lock of the product finishes the job.
    """
    try:
        pending.unlink(missing_ok=True)
        # The scratch copy `atomic_write` leaves when writing the contract failed.
        pending.with_name(f".{pending.name}.tmp-{os.getpid()}").unlink(missing_ok=True)
        if not existed and not store.exists(name):
            shutil.rmtree(store.product_dir(name), ignore_errors=True)
            return
        _drop_uncommitted(store.table_dir(name), staged.files)
        if history.marker_path.exists():
            history.remove_orphans()  # files a merge or a schema-merging write made itself
            history.marker_path.unlink()
    except Exception as exc:  # the error that made the publish fail is the one to report
        log.warning("%s: a failed publish is left for recovery: %s", name, exc)


def _disk_full(store: ProductStore, name: str, *, committed: int | None) -> DiskFullError:
    """Explain a full disk: which product, which folder, what is left, what to do."""
    home = store.home.root.absolute()
    try:
        usage = shutil.disk_usage(home)
        size = f"{_size_text(usage.total)} in all, {_size_text(usage.free)} free"
    except OSError:
        size = "size unknown"
    where = f"no space left on the disk holding the node home {home}"
    move = "free space on that disk, or move the node home to a bigger one"
    if committed is not None:
        return DiskFullError(
            f"disk full while publishing '{name}': version {committed} was committed, but "
            f"signing it into the product's log failed: {where} ({size})",
            product=name,
            folder=str(home),
            hint=f"{move}; the node signs version {committed} when it next opens or publishes "
            f"'{name}' (`shoal verify {name}` does that, then checks the history)",
        )
    try:
        exists = store.exists(name)
        latest = store.latest_version(name) if exists else 0
    except Exception:  # only the message's last words depend on it
        exists, latest = True, 0
    if not exists:
        left = "nothing was published and no product was created"
    elif latest:
        left = f"nothing was published; version {latest} is still the latest"
    else:
        left = "nothing was published"
    return DiskFullError(
        f"disk full while publishing '{name}': {where} ({size} once this publish's files "
        f"were removed); {left}",
        product=name,
        folder=str(home),
        hint=f"{move} (then point --home or SHOAL_HOME at it), and publish again",
    )


def _size_text(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    amount = float(size)
    for unit in ("KiB", "MiB", "GiB"):
        amount /= 1024
        if amount < 1024 or unit == "GiB":
            break
    return f"{amount:.1f} {unit}"


def check_current_data(store: ProductStore, name: str, contract: Contract) -> None:
    """Check a product's current rows against a new contract, as a publish would.

    Columns the contract adds and the data lacks read as nulls, so adding an optional
    column passes and adding a required one fails with its count of rows.
    """
    dataset = store.dataset(name)
    present = set(dataset.schema.names)
    target = ContractCheck(contract).arrow_schema
    dropped = sorted(present - set(target.names))
    if dropped:
        raise ConflictError(
            f"the current data of '{name}' has column(s) {', '.join(dropped)} that the new "
            "contract drops",
            hint="publish the new data with --mode overwrite --contract FILE instead",
        )
    projection = {
        f.name: pc.field(f.name) if f.name in present else pc.scalar(pa.scalar(None, f.type))
        for f in target
    }
    reader = dataset.scanner(columns=projection).to_reader()
    staging = store.home.new_tmp_dir(f"check-{name}-")
    try:
        staged = _stage(reader, contract, staging, store, name, None)
        _check_rows(store, name, contract, staged, Mode.OVERWRITE, [], None)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@dataclass
class _Staged:
    """Conformed rows written to scratch Parquet files, not yet part of the table."""

    files: list[Path]
    rows: int
    schema: pa.Schema


def _stage(
    reader: pa.RecordBatchReader,
    contract: Contract,
    staging: Path,
    store: ProductStore,
    name: str,
    progress: Progress | None,
) -> _Staged:
    """Conform and write every batch to Parquet files of at most `publish_file_rows` rows.

    Once a batch fails its casts, writing stops but reading goes on, so the error can
    report every bad row's count, not just the first batch's.
    """
    check = ContractCheck(contract)
    check.check_columns(reader.schema)
    check.raise_if_failed(name)
    schema = check.arrow_schema
    per_file = store.home.settings.publish_file_rows
    files: list[Path] = []
    writer: pq.ParquetWriter | None = None
    rows_in_file = 0
    rows = 0
    failed = False
    try:
        for batch in reader:
            if not batch.num_rows:
                continue
            rows += batch.num_rows
            conformed = check.conform(batch)
            if progress is not None:
                progress(rows)
            if conformed is None:
                failed = True
            if failed or conformed is None:
                continue
            if writer is None or rows_in_file >= per_file:
                if writer is not None:
                    writer.close()
                path = staging / f"part-{len(files):05d}-{uuid.uuid4().hex}.parquet"
                files.append(path)
                writer = pq.ParquetWriter(path, schema, compression="snappy")
                rows_in_file = 0
            writer.write_batch(conformed, row_group_size=256 * 1024)
            rows_in_file += conformed.num_rows
    finally:
        if writer is not None:
            writer.close()
    check.raise_if_failed(name)
    return _Staged(files=files, rows=rows, schema=schema)


def _register_new_rows(con: Any, staged: _Staged, schema: pa.Schema) -> None:
    if staged.files:
        paths = ", ".join(_sql_string(str(path)) for path in staged.files)
        con.execute(f"CREATE VIEW new_rows AS SELECT * FROM read_parquet([{paths}])")
    else:
        con.register("__empty_new_rows", schema.empty_table())
        con.execute("CREATE VIEW new_rows AS SELECT * FROM __empty_new_rows")


def _check_rows(
    store: ProductStore,
    name: str,
    contract: Contract,
    staged: _Staged,
    mode: Mode,
    keys: list[str],
    table: DeltaTable | None,
) -> None:
    """Check the row rules over the new rows and over the product as it will be."""
    check = ContractCheck(contract)
    with trusted_connection() as con:
        _register_new_rows(con, staged, staged.schema)
        if table is not None and mode is not Mode.OVERWRITE:
            con.register("__current", table.to_pyarrow_dataset())
            kept = "SELECT c.* FROM __current AS c"
            if mode is Mode.UPSERT:
                match = " AND ".join(
                    f"n.{quote_identifier(k)} IS NOT DISTINCT FROM c.{quote_identifier(k)}"
                    for k in keys
                )
                kept += f" WHERE NOT EXISTS (SELECT 1 FROM new_rows AS n WHERE {match})"
            # BY NAME: columns the contract added since the old files were written read as NULL.
            con.execute(f"CREATE VIEW all_rows AS {kept} UNION ALL BY NAME SELECT * FROM new_rows")
        else:
            con.execute("CREATE VIEW all_rows AS SELECT * FROM new_rows")
        if mode is Mode.UPSERT:
            _check_unique_keys(con, keys, name)
        check.check_rows(con, new_rows="new_rows", all_rows="all_rows")
    check.raise_if_failed(name)


def _check_unique_keys(con: Any, keys: list[str], name: str) -> None:
    """An upsert needs each key at most once in the new data, or the merge is ambiguous."""
    cols = ", ".join(quote_identifier(k) for k in keys)
    dup_sql = f"SELECT {cols}, count(*) AS n FROM new_rows GROUP BY ALL HAVING count(*) > 1"
    total = con.execute(f"SELECT coalesce(sum(n), 0) FROM ({dup_sql})").fetchall()[0][0]
    if total:
        samples = con.sql(f"{dup_sql} LIMIT 5").to_arrow_table().to_pylist()
        failure = RuleFailure(
            "upsert key",
            ",".join(keys),
            int(total),
            "the upsert key must be unique within the published data",
            [json.loads(json.dumps(row, default=str)) for row in samples],
        )
        raise ContractViolation(name, [failure])


def _upsert_keys(
    mode: Mode, key: Sequence[str] | None, contract: Contract, exists: bool
) -> list[str]:
    if mode is not Mode.UPSERT:
        if key:
            raise UsageError("--key is only used with --mode upsert")
        return []
    keys = list(key) if key else contract.primary_key()
    if not keys:
        raise UsageError("--mode upsert needs --key COL[,COL...] or a primary key in the contract")
    unknown = [k for k in keys if k not in contract.column_names()]
    if unknown:
        raise UsageError(f"upsert key column(s) not in the contract: {', '.join(unknown)}")
    return keys


def _commit(
    store: ProductStore,
    name: str,
    staged: _Staged,
    mode: Mode,
    keys: list[str],
    table: DeltaTable | None,
    meta: dict[str, Any],
    rewrites: bool,
) -> tuple[int, int]:
    """Make the staged rows the product's next version in one Delta commit.

    `rewrites` says Delta writes the files itself (a merge, or an append that adds
    columns); otherwise the staged files are renamed into the table as they are.
    Gives (rows added, rows removed). On failure the caller rolls back (`_roll_back`)
    unless the commit is in the Delta log all the same.
    """
    table_dir = store.table_dir(name)
    rows_removed = 0
    if table is not None and mode is Mode.OVERWRITE:
        rows_removed = _row_count(table)
    if table is not None and mode is Mode.UPSERT:
        return _merge(table, staged, keys, meta)
    if table is not None and rewrites:
        # Delta takes new columns only through a schema merge, which writes its own files.
        data = pads.dataset([str(p) for p in staged.files], schema=staged.schema)
        props = _commit_properties(meta, staged.rows, 0, len(staged.files), 0)
        write_deltalake(
            table,
            data.scanner().to_reader(),
            mode="append",
            schema_mode="merge",
            commit_properties=props,
        )
        return staged.rows, 0
    table_dir.mkdir(parents=True, exist_ok=True)
    added = [_move_into_table(path, table_dir) for path in staged.files]
    files_removed = len(table.file_uris()) if table is not None and mode is Mode.OVERWRITE else 0
    props = _commit_properties(meta, staged.rows, rows_removed, len(added), files_removed)
    if table is None:
        create_table_with_add_actions(
            str(table_dir),
            Schema.from_arrow(staged.schema),
            added,
            mode="error",
            commit_properties=props,
        )
    else:
        actions: list[AddAction | RemoveAction] = list(added)
        table.create_write_transaction(
            actions, mode=mode.value, schema=staged.schema, commit_properties=props
        )
    return staged.rows, rows_removed


def _merge(
    table: DeltaTable, staged: _Staged, keys: list[str], meta: dict[str, Any]
) -> tuple[int, int]:
    predicate = " AND ".join(
        f"target.{quote_identifier(k)} = source.{quote_identifier(k)}" for k in keys
    )
    source = pads.dataset([str(p) for p in staged.files], schema=staged.schema).to_table()
    # Rows added and removed are only known after the merge, so they go in as the merge's
    # own metrics and Shoal's history reads them back from there.
    merger = table.merge(
        source,
        predicate=predicate,
        source_alias="source",
        target_alias="target",
        commit_properties=CommitProperties(custom_metadata=_stringify(meta)),
    )
    metrics = merger.when_matched_update_all().when_not_matched_insert_all().execute()
    updated = int(metrics.get("num_target_rows_updated", 0))
    inserted = int(metrics.get("num_target_rows_inserted", 0))
    return updated + inserted, updated


def _commit_properties(
    meta: dict[str, Any], rows_added: int, rows_removed: int, files_added: int, files_removed: int
) -> CommitProperties:
    full = dict(meta)
    full.update(
        rows_added=rows_added,
        rows_removed=rows_removed,
        files_added=files_added,
        files_removed=files_removed,
    )
    return CommitProperties(custom_metadata=_stringify(full))


def _stringify(meta: dict[str, Any]) -> dict[str, str]:
    return {f"{META_PREFIX}{key}": str(value) for key, value in meta.items()}


def _row_count(table: DeltaTable) -> int:
    actions = pa.table(table.get_add_actions(flatten=True))
    return int(pc.sum(actions["num_records"]).as_py() or 0) if actions.num_rows else 0


def _latest_version(table: DeltaTable | None) -> int:
    """Shoal's version number of the table's latest commit (0 for a new product)."""
    if table is None:
        return 0
    for commit in table.history(10):
        value = commit.get(f"{META_PREFIX}version")
        if value is not None:
            return int(value)
    return 0


def _flush_to_disk(path: Path) -> None:
    with path.open("rb") as handle:
        os.fdatasync(handle.fileno())


def _move_into_table(path: Path, table_dir: Path) -> AddAction:
    """Rename a staged file into the table folder and describe it for the Delta log."""
    target = table_dir / path.name
    path.replace(target)
    stat = target.stat()
    rows = pq.ParquetFile(target).metadata.num_rows
    return AddAction(
        path=target.name,
        size=stat.st_size,
        partition_values={},
        modification_time=int(stat.st_mtime * 1000),
        data_change=True,
        stats=json.dumps({"numRecords": rows}),
    )


def _drop_uncommitted(table_dir: Path, staged: list[Path]) -> None:
    for path in staged:
        (table_dir / path.name).unlink(missing_ok=True)


def _same_schema(table: DeltaTable, schema: pa.Schema) -> bool:
    current = pa.schema(table.schema().to_arrow())
    return [(f.name, _delta_kind(f.type)) for f in current] == [
        (f.name, _delta_kind(f.type)) for f in schema
    ]


def _delta_kind(data_type: pa.DataType) -> str:
    """Compare types as Delta stores them (string and large_string are one type there)."""
    if pa.types.is_string(data_type) or pa.types.is_large_string(data_type):
        return "string"
    if pa.types.is_binary(data_type) or pa.types.is_large_binary(data_type):
        return "binary"
    return str(data_type)


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
