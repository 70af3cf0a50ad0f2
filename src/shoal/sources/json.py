"""JSON and newline-delimited JSON files, read by DuckDB's JSON reader.

A `.json` file may hold a top-level array of objects or one object per line; DuckDB detects
which and infers the columns (nested objects become structs, arrays become lists).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import ClassVar

import duckdb
import pyarrow as pa

from shoal.engine import trusted_connection
from shoal.errors import SourceError
from shoal.sources.base import BATCH_ROWS, SourceOptions
from shoal.sources.files import describe_path, existing_file, sql_string, utf8_named

__all__ = ["JsonSource"]


class JsonSource:
    name: ClassVar[str] = "json"
    patterns: ClassVar[tuple[str, ...]] = ("*.json", "*.ndjson", "*.jsonl")

    def matches(self, spec: str) -> bool:
        return spec.lower().endswith((".json", ".ndjson", ".jsonl"))

    @contextmanager
    def open(self, spec: str, options: SourceOptions) -> Iterator[pa.RecordBatchReader]:
        path = existing_file(spec)
        shown = describe_path(path)
        with path.open("rb") as handle:
            head = handle.read(4096).lstrip()
        if not head:
            raise SourceError(f"{shown} is empty")
        if head[:1] not in (b"{", b"["):
            raise SourceError(f"{shown} is not JSON objects (an array or one object per line)")
        style = "newline_delimited" if spec.lower().endswith((".ndjson", ".jsonl")) else "auto"
        with utf8_named(path, options.scratch_dir) as named, trusted_connection() as con:
            sql = (
                f"SELECT * FROM read_json({sql_string(str(named))}, format={sql_string(style)}, "
                "sample_size=-1, maximum_object_size=67108864)"
            )
            try:
                reader = con.sql(sql).to_arrow_reader(BATCH_ROWS)
            except duckdb.Error as exc:
                raise SourceError(f"cannot read {shown} as JSON: {_first_line(exc)}") from exc

            def batches() -> Iterator[pa.RecordBatch]:
                try:
                    yield from reader
                except (duckdb.Error, OSError) as exc:
                    raise SourceError(f"cannot read {shown} as JSON: {_first_line(exc)}") from exc

            yield pa.RecordBatchReader.from_batches(reader.schema, batches())


def _first_line(exc: Exception) -> str:
    text = str(exc).replace("Invalid Input Error: ", "")
    return text.splitlines()[0][:300] if text else type(exc).__name__
