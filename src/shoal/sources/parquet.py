"""Parquet files, streamed batch by batch with pyarrow.

Only one row group's columns are decoded at a time, so memory follows the file's row-group
size, not its total size. The schema is the file's own (Parquet is typed); a file that is
not Parquet, or is cut off or damaged, is refused with a SourceError, whether the damage
shows when the footer is read or only when a later row group is.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import ClassVar

import pyarrow as pa
import pyarrow.parquet as pq

from shoal.errors import SourceError
from shoal.sources.base import BATCH_ROWS, SourceOptions
from shoal.sources.files import non_empty_file, utf8_named

__all__ = ["ParquetSource"]

# What pyarrow raises for bytes that are not (or no longer) valid Parquet.
_DAMAGE = (pa.ArrowException, OSError)


class ParquetSource:
    name: ClassVar[str] = "parquet"
    patterns: ClassVar[tuple[str, ...]] = ("*.parquet", "*.pq")

    def matches(self, spec: str) -> bool:
        return spec.lower().endswith((".parquet", ".pq"))

    @contextmanager
    def open(self, spec: str, options: SourceOptions) -> Iterator[pa.RecordBatchReader]:
        path, shown = non_empty_file(spec)
        with ExitStack() as stack:
            named = stack.enter_context(utf8_named(path, options.scratch_dir))
            try:
                handle = pq.ParquetFile(named)
            except _DAMAGE as exc:
                raise SourceError(
                    f"{shown} is not a readable Parquet file: {_first_line(exc)}"
                ) from exc
            stack.callback(handle.close)

            def batches() -> Iterator[pa.RecordBatch]:
                try:
                    yield from handle.iter_batches(batch_size=BATCH_ROWS)
                except _DAMAGE as exc:
                    raise SourceError(f"{shown} is damaged: {_first_line(exc)}") from exc

            yield pa.RecordBatchReader.from_batches(handle.schema_arrow, batches())


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
