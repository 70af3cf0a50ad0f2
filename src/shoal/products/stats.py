"""Column statistics of a product version, for the planner's choices.

The catalog carries, per column, an estimate of its number of distinct values. The planner
uses it to decide whether grouping at the nodes pays: grouping by a near-unique key sends
about as many rows as it reads, so only projection and filters are pushed then.

The estimate comes from a bounded sample (the first `SAMPLE_ROWS` rows), so it costs the
same for any product size and is made once per version, when the node refreshes its catalog
entry, never on the query path:

* a column whose sample has few distinct values (under a tenth of the sample) is taken to
  have seen them all (a store, a SKU, a day);
* otherwise the distinct share of the sample is scaled to the product's rows (an order id,
  a timestamp).

That is coarse, and only meant to tell "groups shrink the rows" from "groups do not".

It also carries each integer column's exact smallest and largest value, from the Parquet
files' footers (no data is read), so a coordinator can skip a node whose rows cannot pass a
filter such as `order_id = 42`. A column without statistics in every row group gets no
bounds; pruning then never happens on it.

`value_ranges` gives the same for every numeric column, with whether any row is NULL: what a
serving node needs to prove a policy's row filter true for every row of a version.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

__all__ = ["SAMPLE_ROWS", "ValueRange", "estimate_distinct", "integer_bounds", "value_ranges"]

SAMPLE_ROWS = 100_000
_SATURATED = 0.1  # distinct share of the sample below which a column has shown every value


def estimate_distinct(dataset: pads.Dataset, rows: int) -> dict[str, int]:
    """Estimated distinct values per column (lower-case names) of a product with `rows`."""
    if rows <= 0:
        return {}
    sample = dataset.head(min(rows, SAMPLE_ROWS))
    if sample.num_rows == 0:
        return {}
    estimates = {}
    for name, column in zip(sample.column_names, sample.columns, strict=True):
        distinct = _distinct(column)
        share = distinct / sample.num_rows
        if share < _SATURATED or sample.num_rows >= rows:
            estimates[name.lower()] = distinct
        else:
            estimates[name.lower()] = min(rows, round(share * rows))
    return estimates


def _distinct(column: pa.ChunkedArray) -> int:
    try:
        return int(pc.count_distinct(column, mode="all").as_py())
    except (pa.ArrowNotImplementedError, pa.ArrowTypeError):
        # Nested types have no hash kernel: count them as all different (no grouping by
        # them is pushed on that account, which only ever costs speed).
        return len(column)


def integer_bounds(dataset: pads.Dataset) -> dict[str, list[int]]:
    """[min, max] per integer column (lower-case names) over every row group, from the
    Parquet footers; a column some row group has no statistics for is left out."""
    names = [f.name for f in dataset.schema if pa.types.is_integer(f.type)]
    found = _footer_statistics(dataset, names) if names else None
    if found is None:
        return {}
    bounds: dict[str, list[int]] = {}
    unknown: set[str] = set()
    for name, stats, rows in found:
        if stats is None or not stats.has_min_max:
            if stats is None or stats.null_count != rows:
                unknown.add(name)
            continue  # an all-NULL row group has no values to bound
        low, high = int(stats.min), int(stats.max)
        seen = bounds.setdefault(name, [low, high])
        seen[0], seen[1] = min(seen[0], low), max(seen[1], high)
    return {name.lower(): value for name, value in bounds.items() if name not in unknown}


@dataclass(frozen=True)
class ValueRange:
    """The smallest and largest value of a numeric column over every row group, whether
    any row may be NULL, and whether it is a float column (whose statistics leave out NaN)."""

    low: float
    high: float
    nulls: bool
    floating: bool


def value_ranges(dataset: pads.Dataset) -> dict[str, ValueRange]:
    """A ValueRange per numeric column (lower-case names) from the Parquet footers; a column
    some non-empty row group has no statistics or null count for is left out."""
    kinds = {
        f.name: pa.types.is_floating(f.type)
        for f in dataset.schema
        if pa.types.is_integer(f.type) or pa.types.is_floating(f.type)
    }
    found = _footer_statistics(dataset, list(kinds)) if kinds else None
    if found is None:
        return {}
    ranges: dict[str, ValueRange] = {}
    unknown: set[str] = set()
    for name, stats, _ in found:
        if stats is None or not stats.has_min_max or not stats.has_null_count:
            unknown.add(name)
            continue
        # Integers stay ints: a float would round those beyond 2**53.
        read = float if kinds[name] else int
        low, high, nulls = read(stats.min), read(stats.max), stats.null_count > 0
        seen = ranges.get(name)
        if seen is not None:
            low, high = min(seen.low, low), max(seen.high, high)
            nulls = nulls or seen.nulls
        ranges[name] = ValueRange(low, high, nulls, kinds[name])
    return {name.lower(): value for name, value in ranges.items() if name not in unknown}


def _footer_statistics(
    dataset: pads.Dataset, names: Sequence[str]
) -> list[tuple[str, Any, int]] | None:
    """(column, its statistics or None, rows) for each of `names` in every non-empty row
    group of every file, from the Parquet footers; None when a file has no footer."""
    found = []
    for fragment in dataset.get_fragments():
        metadata = getattr(fragment, "metadata", None)
        if metadata is None:
            return None
        positions = {metadata.schema.column(i).name: i for i in range(metadata.num_columns)}
        for group in range(metadata.num_row_groups):
            row_group = metadata.row_group(group)
            if row_group.num_rows == 0:
                continue
            for name in names:
                stats = row_group.column(positions[name]).statistics if name in positions else None
                found.append((name, stats, row_group.num_rows))
    return found
