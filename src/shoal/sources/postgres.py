"""PostgreSQL tables and queries, streamed as Arrow through the ADBC PostgreSQL driver.

ADBC reads with PostgreSQL's binary COPY protocol straight into Arrow batches. The session
is made read-only before the user's `--query` runs, so a source can never change the
database it reads. Types: numeric becomes a decimal or string as the driver decides (the
contract check casts it), timestamptz a UTC timestamp, json/uuid/arrays strings or lists.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

import adbc_driver_postgresql.dbapi as pg
import pyarrow as pa

from shoal.errors import SourceError
from shoal.sources.base import SourceOptions

__all__ = ["PostgresSource", "mask_password"]


class PostgresSource:
    name: ClassVar[str] = "postgres"
    patterns: ClassVar[tuple[str, ...]] = ("postgresql://...", "postgres://...")

    def matches(self, spec: str) -> bool:
        return spec.lower().startswith(("postgresql://", "postgres://"))

    @contextmanager
    def open(self, spec: str, options: SourceOptions) -> Iterator[pa.RecordBatchReader]:
        shown = mask_password(spec)
        if (options.table is None) == (options.query is None):
            raise SourceError("a PostgreSQL source needs exactly one of --table or --query")
        query = options.query if options.query is not None else table_query(options.table or "")
        try:
            con = pg.connect(spec)
        except Exception as exc:  # the driver raises its own DB-API error classes
            raise SourceError(f"cannot connect to {shown}: {_clean(exc, spec)}") from exc
        try:
            cursor = con.cursor()
            try:
                # The driver has already begun a transaction: make that one read-only too.
                cursor.execute("SET TRANSACTION READ ONLY")
                cursor.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
                cursor.execute(query)
                reader = cursor.fetch_record_batch()
            except Exception as exc:
                raise SourceError(
                    f"PostgreSQL query failed on {shown}: {_clean(exc, spec)}"
                ) from exc

            def batches() -> Iterator[pa.RecordBatch]:
                try:
                    yield from reader
                except Exception as exc:
                    raise SourceError(
                        f"PostgreSQL read failed on {shown}: {_clean(exc, spec)}"
                    ) from exc

            yield pa.RecordBatchReader.from_batches(reader.schema, batches())
            cursor.close()
        finally:
            con.close()


def table_query(table: str) -> str:
    """SELECT every row of `table` (`name` or `schema.name`), identifiers quoted safely."""
    parts = table.split(".")
    if not table or len(parts) > 2 or not all(parts):
        raise SourceError(f"bad table name {table!r}: use NAME or SCHEMA.NAME")
    return "SELECT * FROM " + ".".join('"' + part.replace('"', '""') + '"' for part in parts)


def mask_password(url: str) -> str:
    """Give `url` with its password replaced by ***, for messages and logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "postgresql://***"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = (parts.username or "") + ":***"
    return urlunsplit(parts._replace(netloc=f"{user}@{netloc[-1]}"))


def _clean(exc: Exception, url: str) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    password = _password(url)
    return text.replace(password, "***") if password else text


def _password(url: str) -> str | None:
    try:
        value: Any = urlsplit(url).password
    except ValueError:
        return None
    return str(value) if value else None
