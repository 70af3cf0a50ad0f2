"""SQLite databases: `sqlite:///relative/path.db` or `sqlite:////absolute/path.db`.

Read with the standard library's sqlite3, opened read-only (and `query_only`, so `--query`
can never write). SQLite lets any value sit in any column, and Arrow readers that type a
column from its first rows fail on later ones (ADBC's driver does: a NULL-only start then
text gives "type mismatch"). So a first pass asks SQLite for the storage classes each column
really holds (`typeof`), and the column type follows from all of them: integer -> int64,
integer and real -> float64, any text -> string, blob -> binary. The second pass streams
rows in batches, so memory stays bounded.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any, ClassVar
from urllib.request import pathname2url

import pyarrow as pa

from shoal.errors import SourceError
from shoal.sources.base import BATCH_ROWS, SourceOptions
from shoal.sources.files import describe_path

__all__ = ["SqliteSource"]

PREFIX = "sqlite:///"


class SqliteSource:
    name: ClassVar[str] = "sqlite"
    patterns: ClassVar[tuple[str, ...]] = ("sqlite:///path.db",)

    def matches(self, spec: str) -> bool:
        return spec.lower().startswith("sqlite:")

    @contextmanager
    def open(self, spec: str, options: SourceOptions) -> Iterator[pa.RecordBatchReader]:
        path = database_path(spec)
        query = select_query(options, _tables(path), describe_path(path))
        with closing(_connect(path)) as con:
            yield _stream(con, query, describe_path(path))


def database_path(spec: str) -> Path:
    if not spec.lower().startswith(PREFIX) or len(spec) == len(PREFIX):
        raise SourceError(
            f"bad SQLite URL {spec!r}: use sqlite:///relative/path.db or sqlite:////absolute.db"
        )
    path = Path(spec[len(PREFIX) :])
    if not path.is_file():
        raise SourceError(f"SQLite database {describe_path(path)} does not exist")
    with path.open("rb") as handle:
        if handle.read(16) != b"SQLite format 3\x00":
            raise SourceError(f"{describe_path(path)} is not a SQLite database")
    return path


def select_query(options: SourceOptions, tables: list[str], shown: str) -> str:
    """Give the SELECT to run: the table's rows or the user's query (exactly one)."""
    if (options.table is None) == (options.query is None):
        raise SourceError("a SQLite source needs exactly one of --table or --query")
    if options.query is not None:
        return options.query
    assert options.table is not None
    if options.table not in tables:
        listed = ", ".join(tables) or "none"
        raise SourceError(f"{shown} has no table {options.table!r}; its tables: {listed}")
    return f"SELECT * FROM {_quote(options.table)}"


def _connect(path: Path) -> sqlite3.Connection:
    uri = f"file:{pathname2url(str(path.resolve()))}?mode=ro"
    try:
        con = sqlite3.connect(uri, uri=True)
        con.execute("PRAGMA query_only = ON")
    except sqlite3.Error as exc:
        raise SourceError(f"cannot open SQLite database {describe_path(path)}: {exc}") from exc
    return con


def _tables(path: Path) -> list[str]:
    with closing(_connect(path)) as con:
        try:
            rows = con.execute(
                "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') ORDER BY name"
            ).fetchall()
        except sqlite3.DatabaseError as exc:
            raise SourceError(f"{describe_path(path)} is not a readable SQLite database") from exc
    return [str(row[0]) for row in rows]


def _stream(con: sqlite3.Connection, query: str, shown: str) -> pa.RecordBatchReader:
    try:
        cursor = con.execute(query)
    except sqlite3.Error as exc:
        raise SourceError(f"SQLite query failed on {shown}: {exc}") from exc
    if cursor.description is None:
        raise SourceError("the SQLite query returns no rows (only SELECT is allowed)")
    names = [str(col[0]) for col in cursor.description]
    cursor.close()
    types = _column_types(con, query, names, shown)
    schema = pa.schema([pa.field(name, kind) for name, kind in zip(names, types, strict=True)])

    def batches() -> Iterator[pa.RecordBatch]:
        rows_cursor = con.execute(query)
        while True:
            try:
                rows = rows_cursor.fetchmany(BATCH_ROWS)
            except sqlite3.Error as exc:
                raise SourceError(f"SQLite read failed on {shown}: {exc}") from exc
            if not rows:
                return
            columns = [
                pa.array([_convert(row[i], kind) for row in rows], kind)
                for i, kind in enumerate(types)
            ]
            yield pa.RecordBatch.from_arrays(columns, schema=schema)

    return pa.RecordBatchReader.from_batches(schema, batches())


def _column_types(
    con: sqlite3.Connection, query: str, names: list[str], shown: str
) -> list[pa.DataType]:
    """Ask SQLite which storage classes each column holds, over every row."""
    probes = []
    for index in range(len(names)):
        column = f"q.{_quote(names[index])}"
        for storage in ("integer", "real", "text", "blob"):
            probes.append(f"max(typeof({column}) = '{storage}')")
    sql = f"SELECT {', '.join(probes)} FROM ({query}) AS q"
    try:
        row = con.execute(sql).fetchone()
    except sqlite3.Error as exc:
        raise SourceError(f"SQLite query failed on {shown}: {exc}") from exc
    types: list[pa.DataType] = []
    for index, name in enumerate(names):
        has_int, has_real, has_text, has_blob = (bool(v) for v in row[index * 4 : index * 4 + 4])
        if has_blob and (has_int or has_real or has_text):
            raise SourceError(f"column {name!r} of {shown} mixes binary and other values")
        if has_blob:
            types.append(pa.binary())
        elif has_text or not (has_int or has_real):
            types.append(pa.string())
        elif has_real:
            types.append(pa.float64())
        else:
            types.append(pa.int64())
    return types


def _convert(value: Any, kind: pa.DataType) -> Any:
    if value is None:
        return None
    if kind == pa.string() and not isinstance(value, str):
        return str(value)
    if kind == pa.float64():
        return float(value)
    return value


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
