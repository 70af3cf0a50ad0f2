"""SQLite databases: `sqlite:///relative/path.db` or `sqlite:////absolute/path.db`.

Read with the ADBC SQLite driver, which steps SQLite's cursor straight into Arrow batches.

SQLite lets any value sit in any column, while ADBC types each column from its first batch
of rows and stops with "type mismatch" when a later value differs: a column of integers
that later holds text or reals, or one that starts with NULLs (ADBC guesses int64). So the
types are settled first, from every row: one pass (about a third of the read's time) asks
SQLite which storage classes each column holds (`typeof`), and the type follows from all:

    integer only -> int64        integer and real -> float64      any text -> string
    blob only -> binary          nothing but NULL -> string       blob and others -> refused

The read then casts each value to its column's storage class and puts one row of that
class in front (dropped again before the caller sees it), so ADBC's guess from the first
rows is right by construction. SQLite has no date or boolean storage: such columns arrive
as their stored text or integers, for a data contract to type.

Access is read-only twice over: the file is opened with `mode=ro`, and a --query only ever
runs as a subquery of Shoal's SELECT, so it cannot be ATTACH, PRAGMA or a write. (The
standard library's sqlite3 would allow the same checks, but builds every value as a Python
object: about three times slower than this.)
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import ExitStack, closing, contextmanager
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

import adbc_driver_manager
import adbc_driver_sqlite.dbapi as adbc_sqlite
import pyarrow as pa

from shoal.engine import quote_identifier
from shoal.errors import SourceError
from shoal.sources.base import BATCH_ROWS, SourceOptions
from shoal.sources.files import describe_path

__all__ = ["SqliteSource", "database_path"]

PREFIX = "sqlite:///"
_MAGIC = b"SQLite format 3\x00"
# What the driver raises: DB-API errors, and OSError for errors met while streaming.
_DRIVER_ERRORS = (adbc_driver_manager.Error, OSError)
# Storage class -> (SQL that converts a value to it, a value of it, the Arrow type).
_STORAGE: dict[str, tuple[str, str, pa.DataType]] = {
    "integer": ("{}", "0", pa.int64()),
    "real": ("CAST({} AS REAL)", "0.0", pa.float64()),
    "text": ("CAST({} AS TEXT)", "''", pa.string()),
    "blob": ("{}", "x'00'", pa.binary()),
}


class SqliteSource:
    name: ClassVar[str] = "sqlite"
    patterns: ClassVar[tuple[str, ...]] = ("sqlite:///path.db",)

    def matches(self, spec: str) -> bool:
        return spec.lower().startswith("sqlite:")

    @contextmanager
    def open(self, spec: str, options: SourceOptions) -> Iterator[pa.RecordBatchReader]:
        if (options.table is None) == (options.query is None):
            raise SourceError("a SQLite source needs exactly one of --table or --query")
        path = database_path(spec)
        shown = describe_path(path)
        with ExitStack() as stack:
            con = stack.enter_context(closing(_connect(path)))
            if options.table is not None:
                query = f"SELECT * FROM {quote_identifier(_known_table(con, options.table, shown))}"
            else:
                query = (options.query or "").strip().rstrip(";")
            names = _run(con, f"SELECT * FROM ({_nested(query)}) LIMIT 0", shown).schema.names
            if not names:
                raise SourceError(f"the query on {shown} gives no columns")
            storage = _storage_classes(con, query, len(names), shown)
            kinds = [
                _storage_class(classes, name, shown)
                for name, classes in zip(names, storage, strict=True)
            ]
            cursor = stack.enter_context(closing(con.cursor()))
            yield _typed_stream(cursor, query, names, kinds, shown)


def database_path(spec: str) -> Path:
    """Give the path of an existing SQLite database named by a `sqlite:///` URL."""
    if not spec.lower().startswith(PREFIX) or len(spec) == len(PREFIX):
        raise SourceError(
            f"bad SQLite URL {spec!r}: use sqlite:///relative/path.db or sqlite:////absolute.db"
        )
    path = Path(spec[len(PREFIX) :])
    if not path.is_file():
        # Checked here: SQLite itself would create an empty database.
        raise SourceError(f"SQLite database {describe_path(path)} does not exist")
    with path.open("rb") as handle:
        if handle.read(len(_MAGIC)) != _MAGIC:
            raise SourceError(f"{describe_path(path)} is not a SQLite database")
    return path


def _connect(path: Path) -> Any:
    # A URI, so the file opens read-only; names that are not UTF-8 go percent-encoded.
    uri = f"file:{quote(os.fsencode(path.resolve()))}?mode=ro"
    try:
        return adbc_sqlite.connect(uri)
    except _DRIVER_ERRORS as exc:
        raise SourceError(f"cannot open SQLite database {describe_path(path)}: {exc}") from exc


def _run(con: Any, sql: str, shown: str) -> pa.Table:
    """Run a small statement of Shoal's and give its whole result."""
    with closing(con.cursor()) as cursor:
        try:
            cursor.execute(sql)
            result: pa.Table = cursor.fetch_arrow_table()
        except _DRIVER_ERRORS as exc:
            raise _failure(exc, "SQLite query failed", shown) from exc
    return result


def _known_table(con: Any, table: str, shown: str) -> str:
    listing = _run(
        con, "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') ORDER BY name", shown
    )
    tables = [str(name) for name in listing.column("name").to_pylist()]
    if table not in tables:
        listed = ", ".join(tables) or "none"
        raise SourceError(f"{shown} has no table {table!r}; its tables: {listed}")
    return table


def _storage_classes(con: Any, query: str, width: int, shown: str) -> list[set[str]]:
    """Ask SQLite which storage classes each column holds over all rows (one pass)."""
    probes = ", ".join(f"group_concat(DISTINCT typeof({_column(i)}))" for i in range(width))
    row = _run(con, f"{_with_q(query, width)} SELECT {probes} FROM q", shown)
    found = [row.column(i)[0].as_py() for i in range(width)]
    return [set((text or "").split(",")) - {"null", ""} for text in found]


def _storage_class(classes: set[str], name: str, shown: str) -> str:
    """The one storage class a column's values are read as, from all it holds."""
    if "blob" in classes and len(classes) > 1:
        raise SourceError(
            f"column {name!r} of {shown} mixes binary values with others",
            hint="select it with CAST(... AS BLOB) or CAST(... AS TEXT)",
        )
    for kind in ("blob", "text", "real", "integer"):
        if kind in classes:
            return kind
    return "text"  # only NULLs: nothing says what they would have been


def _typed_stream(
    cursor: Any, query: str, names: list[str], kinds: list[str], shown: str
) -> pa.RecordBatchReader:
    width = len(names)
    first = ", ".join(
        f"{_STORAGE[kind][1]} AS {quote_identifier(name)}"
        for kind, name in zip(kinds, names, strict=True)
    )
    rest = ", ".join(_STORAGE[kind][0].format(_column(i)) for i, kind in enumerate(kinds))
    # SQLite runs the arms of UNION ALL in order: the typed first row comes first.
    sql = f"{_with_q(query, width)} SELECT {first} UNION ALL SELECT {rest} FROM q"
    try:
        # The driver's default is 1,024 rows a batch; fewer, larger batches are cheaper.
        cursor.adbc_statement.set_options(**{"adbc.sqlite.query.batch_rows": str(BATCH_ROWS)})
        cursor.execute(sql)
        reader = cursor.fetch_record_batch()
    except _DRIVER_ERRORS as exc:
        raise _failure(exc, "SQLite query failed", shown) from exc
    schema = pa.schema([(n, _STORAGE[k][2]) for n, k in zip(names, kinds, strict=True)])

    def batches() -> Iterator[pa.RecordBatch]:
        skip = 1
        try:
            for batch in reader:
                if skip and batch.num_rows:
                    batch, skip = batch.slice(skip), 0
                yield pa.RecordBatch.from_arrays(batch.columns, schema=schema)
        except _DRIVER_ERRORS as exc:
            raise _failure(exc, "SQLite read failed", shown) from exc

    return pa.RecordBatchReader.from_batches(schema, batches())


def _nested(query: str) -> str:
    # On lines of its own, so a trailing -- comment in the query cannot swallow the ')'.
    return f"\n{query}\n"


def _with_q(query: str, width: int) -> str:
    """Give a WITH naming the query's result `q`, its columns c0, c1, ... by position.

    Positional names, because the query's own may repeat or hold any character.
    """
    return f"WITH q({', '.join(_column(i) for i in range(width))}) AS ({_nested(query)})"


def _column(index: int) -> str:
    return f"c{index}"


def _failure(exc: Exception, what: str, shown: str) -> SourceError:
    """The driver's error in one line, its codes and prefixes dropped."""
    text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
    text = re.sub(r"^[A-Z_]+: (\[SQLite\] )?(Failed to prepare query: )?", "", text)
    hint = "a --query is one SELECT statement: sources are only ever read"
    return SourceError(f"{what} on {shown}: {text}", hint=hint if "syntax error" in text else None)
