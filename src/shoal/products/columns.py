"""Hot columns in memory: decoded product columns, kept per version for queries.

Reading a product means decoding Parquet, which costs far more than the query itself for
most questions (a sum over 2.5 million rows takes milliseconds in DuckDB; decoding its
column takes ten times that). A version never changes, so the decoded columns a query read
are kept, per (product, Delta version, column), in an LRU bounded in bytes
(`table_cache_mb`), and the next query over them scans memory. A query whose columns do
not fit reads Parquet as before.

Integer columns also get zone maps: [min, max] per block of `BLOCK_ROWS` rows. A caller that
knows a filter every row must pass (a fragment's WHERE) gives it as `keep`, and blocks that
cannot pass are left out of the table DuckDB scans, so a lookup by id reads one block, not
the whole product. DuckDB still applies the filter to what remains.

Which columns a statement reads is found from its tokens: every identifier that names a
column (and all of them when it uses `*` other than in `count(*)`). A reference the scan
does not understand can only load too much, never too little, because every name is taken.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
from sqlglot.errors import TokenError
from sqlglot.tokenizer_core import TokenType
from sqlglot.tokens import Tokenizer

__all__ = ["BLOCK_ROWS", "BlockFilter", "ColumnCache", "columns_named"]

BLOCK_ROWS = 65_536
# Given one block's [min, max] per integer column (lower-case names): may a row pass?
BlockFilter = Callable[[dict[str, tuple[int, int]]], bool]


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
        # Zone maps of cached integer columns: per block, [min, max] or None (all NULL).
        self._zones: dict[tuple[str, int, str], list[tuple[int, int] | None]] = {}
        self._bytes = 0
        self._lock = threading.Lock()
        # One loader per (product, version) at a time: two queries do not decode twice.
        self._loading: dict[tuple[str, int], threading.Lock] = {}

    def table(
        self,
        product: str,
        version: int,
        dataset: pads.Dataset,
        columns: Iterable[str] | None,
        keep: BlockFilter | None = None,
    ) -> pa.Table | None:
        """The product's `columns` (all when None) at `version`, from memory, decoding the
        missing ones once; None when they do not fit the cache (read the dataset then).
        With `keep`, blocks whose integer columns' bounds fail it are left out."""
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
        fields = pa.schema([schema.field(n) for n in wanted])
        table = pa.table([found[n] for n in wanted], schema=fields)
        return table if keep is None else self._blocks(product, version, table, keep)

    def _blocks(self, product: str, version: int, table: pa.Table, keep: BlockFilter) -> pa.Table:
        """`table` without the blocks `keep` rules out, by the zone maps of its columns."""
        with self._lock:
            zones = {
                name.lower(): self._zones[product, version, name]
                for name in table.column_names
                if (product, version, name) in self._zones
            }
        if not zones:
            return table
        kept = []
        for block, start in enumerate(range(0, table.num_rows, BLOCK_ROWS)):
            bounds: dict[str, tuple[int, int]] = {}
            for name, zone in zones.items():
                found = zone[block]
                if found is not None:
                    bounds[name] = found
            if keep(bounds):
                kept.append(table.slice(start, BLOCK_ROWS))
        if len(kept) * BLOCK_ROWS >= table.num_rows:
            return table
        return pa.concat_tables(kept) if kept else table.slice(0, 0)

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
                if pa.types.is_integer(column.type):
                    self._zones[key] = _zone_map(column)
            while self._bytes > self.max_bytes and self._columns:
                gone, evicted = self._columns.popitem(last=False)
                self._bytes -= evicted.nbytes
                self._zones.pop(gone, None)


def _zone_map(column: pa.ChunkedArray) -> list[tuple[int, int] | None]:
    """[min, max] of each block of `BLOCK_ROWS` values; None for a block of NULLs only."""
    zones: list[tuple[int, int] | None] = []
    for start in range(0, len(column), BLOCK_ROWS):
        found = pc.min_max(column.slice(start, BLOCK_ROWS))
        low, high = found["min"].as_py(), found["max"].as_py()
        zones.append(None if low is None else (int(low), int(high)))
    return zones
