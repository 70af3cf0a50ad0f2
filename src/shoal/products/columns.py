"""Hot columns in memory: decoded product columns, kept per version for queries.

Reading a product means decoding Parquet, which costs far more than the query itself for
most questions (a sum over 2.5 million rows takes milliseconds in DuckDB; decoding its
column takes ten times that). A version never changes, so the decoded columns a query read
are kept, per (product, Delta version, column), in an LRU bounded in bytes
(`table_cache_mb`), and the next query over them scans memory. A query whose columns do
not fit reads Parquet as before.

Which columns a statement reads is found from its tokens: every identifier that names a
column (and all of them when it uses `*` other than in `count(*)`). A reference the scan
does not understand can only load too much, never too little, because every name is taken.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable

import pyarrow as pa
import pyarrow.dataset as pads
from sqlglot.errors import TokenError
from sqlglot.tokenizer_core import TokenType
from sqlglot.tokens import Tokenizer

__all__ = ["ColumnCache", "columns_named"]


def columns_named(sql: str, schema: pa.Schema) -> list[str] | None:
    """The columns of `schema` that `sql` may read, in schema order; None when it may read
    every column (a `*` that is not `count(*)`, or text the tokenizer cannot read)."""
    try:
        tokens = Tokenizer().tokenize(sql)
    except TokenError:
        return None
    names: set[str] = set()
    for index, token in enumerate(tokens):
        if token.token_type == TokenType.STAR:
            before = tokens[index - 1].token_type if index else None
            if before != TokenType.L_PAREN:
                return None
        else:
            # Every token's text, keywords too: a column may be named `date` or `year`.
            names.add(token.text.lower())
    # `COLUMNS(...)` selects by pattern: take every column.
    if "columns" in names and "columns" not in {f.name.lower() for f in schema}:
        return None
    return [f.name for f in schema if f.name.lower() in names]


class ColumnCache:
    """Decoded columns of product versions, bounded in bytes, least recently used first out."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._columns: OrderedDict[tuple[str, int, str], pa.ChunkedArray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        # One loader per (product, version) at a time: two queries do not decode twice.
        self._loading: dict[tuple[str, int], threading.Lock] = {}

    def table(
        self, product: str, version: int, dataset: pads.Dataset, columns: Iterable[str] | None
    ) -> pa.Table | None:
        """The product's `columns` (all when None) at `version`, from memory, decoding the
        missing ones once; None when they do not fit the cache (read the dataset then)."""
        schema = dataset.schema
        wanted = [f.name for f in schema] if columns is None else list(columns)
        if not wanted or self.max_bytes <= 0:
            return None
        with self._lock:
            loader = self._loading.setdefault((product, version), threading.Lock())
        with loader:
            found = self._get(product, version, wanted)
            missing = [name for name in wanted if name not in found]
            if missing:
                try:
                    decoded = dataset.to_table(columns=missing)
                except (pa.ArrowInvalid, OSError):
                    return None  # reading the dataset again raises the error itself
                size = decoded.nbytes
                if size + sum(c.nbytes for c in found.values()) > self.max_bytes:
                    return None
                for name in missing:
                    found[name] = decoded.column(name)
                self._put(product, version, {n: decoded.column(n) for n in missing})
        return pa.table(
            [found[n] for n in wanted], schema=pa.schema([schema.field(n) for n in wanted])
        )

    def _get(self, product: str, version: int, names: list[str]) -> dict[str, pa.ChunkedArray]:
        with self._lock:
            found = {}
            for name in names:
                key = (product, version, name)
                column = self._columns.get(key)
                if column is not None:
                    self._columns.move_to_end(key)
                    found[name] = column
            return found

    def _put(self, product: str, version: int, columns: dict[str, pa.ChunkedArray]) -> None:
        with self._lock:
            for name, column in columns.items():
                key = (product, version, name)
                if key in self._columns:
                    continue
                self._columns[key] = column
                self._bytes += column.nbytes
            while self._bytes > self.max_bytes and self._columns:
                _, evicted = self._columns.popitem(last=False)
                self._bytes -= evicted.nbytes
