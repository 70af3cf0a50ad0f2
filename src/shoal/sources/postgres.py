"""PostgreSQL tables and queries, streamed as Arrow through the ADBC PostgreSQL driver.

ADBC reads with PostgreSQL's binary COPY protocol straight into Arrow batches (of about
16 MiB each, so memory stays bounded). Access is read-only: the session and its
transaction are made read-only before anything runs, and a --query only ever runs as a
subquery of Shoal's SELECT, so it cannot be a write, a DDL statement or a second statement.

What the driver gives that a Delta table cannot hold is turned into what it can, in the
SQL Shoal sends (values are converted by PostgreSQL, never row by row in Python):

    numeric(p, s) with p <= 38   decimal128(p, s), exact (a NaN in it is refused)
    numeric without a precision, or with p > 38   string, every digit kept (NaN as 'NaN')
    money                        string, via numeric ('12.50'), not the driver's cents
    timestamptz                  timestamp[us, tz=UTC]; timestamp stays without a zone
    time                         time64 (a contract stores it as ISO text)
    interval                     string in ISO 8601 ('P1DT2H')
    json, jsonb                  string holding the JSON text
    uuid, inet, enums, xml, ranges, geometric and other types   string, PostgreSQL's text
    arrays                       lists; arrays of types above become lists of strings.
                                 ADBC flattens arrays of two or more dimensions into one
                                 list, so those are refused instead (select them ::text)

Passwords never reach a message: errors name the URL with its password masked.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import ExitStack, closing, contextmanager
from typing import Any, ClassVar
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import adbc_driver_manager
import adbc_driver_postgresql.dbapi as adbc_pg
import pyarrow as pa
import pyarrow.compute as pc

from shoal.errors import SourceError
from shoal.sources.base import SourceOptions

__all__ = ["PostgresSource", "mask_password", "table_query"]

_SCHEMES = ("postgresql://", "postgres://")
_DRIVER_ERRORS = (adbc_driver_manager.Error, OSError)
_CONNECT_TIMEOUT_S = 15
_MAX_DECIMAL_PRECISION = 38
# Arrow types a Delta table holds as they come from the driver.
_KEPT = (
    pa.types.is_boolean,
    pa.types.is_integer,
    pa.types.is_floating,
    pa.types.is_string,
    pa.types.is_large_string,
    pa.types.is_binary,
    pa.types.is_date,
    pa.types.is_timestamp,
    pa.types.is_time,
)
_GUARD_MARK = "-dimensional array in column #"
_SELECT_ONLY = "a --query is one SELECT statement: sources are only ever read"


class PostgresSource:
    name: ClassVar[str] = "postgres"
    patterns: ClassVar[tuple[str, ...]] = ("postgresql://...", "postgres://...")

    def matches(self, spec: str) -> bool:
        return spec.lower().startswith(_SCHEMES)

    @contextmanager
    def open(self, spec: str, options: SourceOptions) -> Iterator[pa.RecordBatchReader]:
        shown = mask_password(spec)
        if (options.table is None) == (options.query is None):
            raise SourceError("a PostgreSQL source needs exactly one of --table or --query")
        if options.table is not None:
            query = table_query(options.table)
        else:
            query = (options.query or "").strip().rstrip(";")
        with ExitStack() as stack:
            try:
                con = stack.enter_context(closing(adbc_pg.connect(_with_timeout(spec))))
            except _DRIVER_ERRORS as exc:
                raise SourceError(f"cannot connect to {shown}: {_clean(exc, spec)}") from exc
            cursor = stack.enter_context(closing(con.cursor()))
            columns: list[_Column] = []
            try:
                # The driver has begun a transaction already: make it read-only too.
                cursor.execute("SET TRANSACTION READ ONLY")
                cursor.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
                cursor.execute("SET intervalstyle = 'iso_8601'")
                columns = [_Column(i, f) for i, f in enumerate(_result_schema(cursor, query))]
                cursor.execute(_select(query, columns))
                reader = cursor.fetch_record_batch()
            except _DRIVER_ERRORS as exc:
                raise _query_error(exc, spec, shown, columns) from exc
            yield _converted(reader, columns, spec, shown)


class _Column:
    """One column of the query's result: how Shoal selects it and what type it gives."""

    def __init__(self, index: int, field: pa.Field) -> None:
        self.index = index
        self.name = field.name
        self.ref = f"q.c{index}"
        self.expression = self.ref
        self.decimal: pa.DataType | None = None
        self.is_array = pa.types.is_list(field.type) or pa.types.is_large_list(field.type)
        pg_type = (field.metadata or {}).get(b"POSTGRESQL:type", b"").decode()
        if pg_type == "numeric":
            self.decimal = _numeric_decimal(field)  # the driver gives numerics as text
        elif pg_type == "money":  # the driver gives cents as int64, whatever the locale
            self.expression = f"CAST(CAST({self.ref} AS numeric) AS text)"
        elif pg_type == "_money":
            self.expression = f"CAST(CAST({self.ref} AS numeric[]) AS text[])"
        elif self.is_array:
            if not _kept(field.type.value_type):
                self.expression = f"CAST({self.ref} AS text[])"
        elif not _kept(field.type):
            self.expression = f"CAST({self.ref} AS text)"

    def guard(self) -> str | None:
        """SQL that fails with a recognisable message on a multi-dimensional array."""
        if not self.is_array:
            return None
        # Plain SQL has no way to raise an error, but casting text to boolean fails with the
        # text in the message; OR evaluates it only for arrays of two or more dimensions.
        dims = f"array_ndims({self.ref})"
        return (
            f"(coalesce({dims}, 1) <= 1 OR CAST({dims} || '{_GUARD_MARK}{self.index}' AS boolean))"
        )

    def convert(self, array: pa.Array) -> pa.Array:
        if isinstance(array, pa.ExtensionArray):
            array = array.storage
        if self.decimal is not None:
            return pc.cast(array, self.decimal)
        return array


def table_query(table: str) -> str:
    """SELECT every row of `table` (`name` or `schema.name`), identifiers quoted safely."""
    parts = table.split(".")
    if not table or len(parts) > 2 or not all(parts):
        raise SourceError(f"bad table name {table!r}: use NAME or SCHEMA.NAME")
    return "SELECT * FROM " + ".".join('"' + part.replace('"', '""') + '"' for part in parts)


def mask_password(url: str) -> str:
    """Give `url` with any password (in the user part or as a parameter) shown as ***."""
    masked = re.sub(r"(://[^/@:]*:)[^/@]*@", r"\1***@", url)
    return re.sub(r"([?&]password=)[^&]*", r"\1***", masked, flags=re.IGNORECASE)


def _result_schema(cursor: Any, query: str) -> pa.Schema:
    """The query's columns and types, from PostgreSQL's description (nothing is run)."""
    schema: pa.Schema = cursor.adbc_execute_schema(f"SELECT * FROM ({_nested(query)}) AS q")
    if not schema.names:
        raise SourceError("the PostgreSQL query gives no columns")
    return schema


def _select(query: str, columns: list[_Column]) -> str:
    aliases = ", ".join(f"c{c.index}" for c in columns)
    listed = ", ".join(c.expression for c in columns)
    sql = f"SELECT {listed} FROM ({_nested(query)}) AS q({aliases})"
    guards = [g for g in (c.guard() for c in columns) if g]
    return sql + (f" WHERE {' AND '.join(guards)}" if guards else "")


def _converted(
    reader: pa.RecordBatchReader, columns: list[_Column], url: str, shown: str
) -> pa.RecordBatchReader:
    """Give the driver's batches with extension types unwrapped and decimals typed."""
    fields = []
    for column, field in zip(columns, reader.schema, strict=True):
        kind = (
            field.type.storage_type if isinstance(field.type, pa.BaseExtensionType) else field.type
        )
        fields.append(pa.field(column.name, column.decimal or kind))
    schema = pa.schema(fields)

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            for batch in reader:
                arrays = [c.convert(a) for c, a in zip(columns, batch.columns, strict=True)]
                yield pa.RecordBatch.from_arrays(arrays, schema=schema)
        except pa.ArrowInvalid as exc:
            raise SourceError(
                f"a numeric value from {shown} does not fit its column's decimal type: {exc}",
                hint="a NaN cannot be a decimal; select the column ::text in --query",
            ) from exc
        except _DRIVER_ERRORS as exc:
            raise _query_error(exc, url, shown, columns) from exc

    return pa.RecordBatchReader.from_batches(schema, batches())


def _numeric_decimal(field: pa.Field) -> pa.DataType | None:
    """decimal128(p, s) for numeric(p, s) with p <= 38; None (text) for other numerics."""
    typmod = int((field.metadata or {}).get(b"POSTGRESQL:typmod", b"-1"))
    if typmod < 4:
        return None  # numeric without a declared precision
    precision, scale = (typmod - 4) >> 16, (typmod - 4) & 0xFFFF
    if not 1 <= precision <= _MAX_DECIMAL_PRECISION or scale > precision:
        return None
    return pa.decimal128(precision, scale)


def _kept(kind: pa.DataType) -> bool:
    return not isinstance(kind, pa.BaseExtensionType) and any(test(kind) for test in _KEPT)


def _nested(query: str) -> str:
    # On lines of its own, so a trailing -- comment in the query cannot swallow the ')'.
    return f"\n{query}\n"


def _with_timeout(url: str) -> str:
    """Add a connect timeout unless the URL has one: libpq's default waits forever."""
    try:
        parts = urlsplit(url)
        params = parse_qsl(parts.query, keep_blank_values=True)
    except ValueError as exc:
        raise SourceError(f"bad PostgreSQL URL {mask_password(url)}") from exc
    if any(key == "connect_timeout" for key, _ in params):
        return url
    params.append(("connect_timeout", str(_CONNECT_TIMEOUT_S)))
    return urlunsplit(parts._replace(query=urlencode(params)))


def _query_error(exc: Exception, url: str, shown: str, columns: list[_Column]) -> SourceError:
    text = _clean(exc, url)
    if _GUARD_MARK in text and columns:
        index = int(re.findall(re.escape(_GUARD_MARK) + r"(\d+)", text)[0])
        return SourceError(
            f"column {columns[index].name!r} from {shown} holds arrays of two or more "
            "dimensions, which would arrive flattened",
            hint="select the column as text (col::text) in --query",
        )
    hint = _SELECT_ONLY if "syntax error" in text else None
    return SourceError(f"PostgreSQL query failed on {shown}: {text}", hint=hint)


def _clean(exc: Exception, url: str) -> str:
    """The driver's message in one line, its prefixes dropped and any password masked."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = re.sub(r"^[A-Z_]+: (\[libpq\] )?", "", text)
    for prefix in (
        "Failed to connect: ",
        "Failed to prepare query: ",
        "Failed to execute query: ",
        "could not begin COPY: ",
    ):
        text = text.replace(prefix, "")
    text = re.sub(r"ERROR:\s+", "", text)
    for secret in _secrets(url):
        text = text.replace(secret, "***")
    return mask_password(text)


def _secrets(url: str) -> set[str]:
    found = set(re.findall(r"://[^/@:]*:([^/@]*)@", url))
    found |= set(re.findall(r"[?&]password=([^&]*)", url, flags=re.IGNORECASE))
    return {s for s in found | {unquote(s) for s in found} if s}
