"""Source readers: each kind in its own module, all yielding Arrow record batches.

`open_source(spec, options)` picks the kind from the path or URL and refuses an unknown one
with the list of supported kinds.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

import pyarrow as pa

from shoal.errors import SourceError
from shoal.sources.base import BATCH_ROWS, SourceKind, SourceOptions
from shoal.sources.csv import CsvSource
from shoal.sources.excel import ExcelSource
from shoal.sources.json import JsonSource
from shoal.sources.parquet import ParquetSource
from shoal.sources.postgres import PostgresSource
from shoal.sources.sqlite import SqliteSource

__all__ = ["BATCH_ROWS", "KINDS", "SourceKind", "SourceOptions", "open_source", "supported"]

KINDS: tuple[SourceKind, ...] = (
    PostgresSource(),
    SqliteSource(),
    ParquetSource(),
    ExcelSource(),
    JsonSource(),
    CsvSource(),
)


def supported() -> str:
    """Give the supported kinds as one line for error messages and --help."""
    return "; ".join(f"{kind.name} ({', '.join(kind.patterns)})" for kind in KINDS)


def open_source(spec: str, options: SourceOptions) -> AbstractContextManager[pa.RecordBatchReader]:
    """Open a source for reading; raise SourceError naming the supported kinds if unknown."""
    for kind in KINDS:
        if kind.matches(spec):
            return kind.open(spec, options)
    raise SourceError(f"unknown source kind for {spec!r}; supported: {supported()}")
