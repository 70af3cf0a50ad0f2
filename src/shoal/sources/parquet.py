"""Parquet files, streamed row group by row group with pyarrow."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import ClassVar

import pyarrow as pa
import pyarrow.parquet as pq

from shoal.errors import SourceError
from shoal.sources.base import BATCH_ROWS, SourceOptions
from shoal.sources.files import describe_path, existing_file

__all__ = ["ParquetSource"]


class ParquetSource:
    name: ClassVar[str] = "parquet"
    patterns: ClassVar[tuple[str, ...]] = ("*.parquet", "*.pq")

    def matches(self, spec: str) -> bool:
        return spec.lower().endswith((".parquet", ".pq"))

    @contextmanager
    def open(self, spec: str, options: SourceOptions) -> Iterator[pa.RecordBatchReader]:
        path = existing_file(spec)
        shown = describe_path(path)
        if path.stat().st_size == 0:
            raise SourceError(f"{shown} is empty")
        try:
            handle = pq.ParquetFile(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise SourceError(f"{shown} is not a readable Parquet file: {exc}") from exc

        def batches() -> Iterator[pa.RecordBatch]:
            try:
                yield from handle.iter_batches(batch_size=BATCH_ROWS)
            except (pa.ArrowInvalid, OSError) as exc:
                raise SourceError(f"{shown} is damaged: {exc}") from exc

        try:
            yield pa.RecordBatchReader.from_batches(handle.schema_arrow, batches())
        finally:
            handle.close()
