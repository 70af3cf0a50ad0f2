"""What every source kind looks like: options in, a stream of Arrow record batches out."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol

import pyarrow as pa

__all__ = ["BATCH_ROWS", "SourceKind", "SourceOptions"]

# Rows per record batch a reader yields: large enough for fast columnar work, small enough
# that memory stays bounded whatever the input size.
BATCH_ROWS = 65_536


@dataclass(frozen=True)
class SourceOptions:
    """Reader options from the command line; each kind uses those that apply to it."""

    table: str | None = None
    query: str | None = None
    sheet: str | None = None
    delimiter: str | None = None
    header: bool | None = None
    encoding: str | None = None
    # Type columns from every row instead of a sample (slower; see `TypeDriftError`).
    exact_types: bool = False
    # Where a reader may put scratch files (e.g. a transcoded copy); on the home's disk.
    scratch_dir: Path | None = None


class SourceKind(Protocol):
    """One kind of source. Modules in `shoal.sources` each define one, all alike."""

    name: ClassVar[str]
    """Short name shown to users, e.g. 'csv'."""
    patterns: ClassVar[tuple[str, ...]]
    """How users recognise it, e.g. ('*.csv', '*.tsv'), for the list of supported kinds."""

    def matches(self, spec: str) -> bool:
        """Tell whether `spec` (a path or URL) is of this kind."""
        ...

    def open(
        self, spec: str, options: SourceOptions
    ) -> AbstractContextManager[pa.RecordBatchReader]:
        """Open `spec` as a stream of batches; leaving the context frees every resource."""
        ...


def iter_batches(reader: pa.RecordBatchReader) -> Iterator[pa.RecordBatch]:
    """Yield the batches of `reader`, skipping empty ones."""
    for batch in reader:
        if batch.num_rows:
            yield batch
