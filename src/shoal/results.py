"""Comparing two query results row by row, the way SQL defines "the same answer".

Used by `shoal demo --check` to prove that the mesh's answers equal answers computed over
the generated data in one place, and by the differential tests. Rows are compared as
multisets unless the query fixes an order; floats match to a relative tolerance because a
sum computed in a different order differs in its last bits.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from typing import Any

import pyarrow as pa

from shoal.errors import UsageError

__all__ = ["first_difference", "read_bounded"]


def read_bounded(reader: pa.RecordBatchReader, max_rows: int, *, hint: str) -> pa.Table:
    """Read a whole result, refusing (UsageError with `hint`) past `max_rows` rows."""
    batches: list[pa.RecordBatch] = []
    rows = 0
    for batch in reader:
        rows += batch.num_rows
        if rows > max_rows:
            raise UsageError(f"the result has more than {max_rows:,} rows", hint=hint)
        batches.append(batch)
    return pa.Table.from_batches(batches, schema=reader.schema)


def first_difference(
    expected: pa.Table, actual: pa.Table, *, ordered: bool = False, rel_tol: float = 1e-9
) -> str | None:
    """Describe the first way `actual` differs from `expected`, or None if they agree.

    Column names must match in order; values are compared with floats to `rel_tol`. With
    `ordered`, rows must come in the same order; otherwise as multisets.
    """
    if expected.column_names != actual.column_names:
        return f"columns differ: expected {expected.column_names}, got {actual.column_names}"
    if expected.num_rows != actual.num_rows:
        return f"row counts differ: expected {expected.num_rows}, got {actual.num_rows}"
    want = [_hashable(tuple(row.values())) for row in expected.to_pylist()]
    got = [_hashable(tuple(row.values())) for row in actual.to_pylist()]
    if not ordered:
        if _has_float(want) or _has_float(got):
            want.sort(key=_sort_key)
            got.sort(key=_sort_key)
        else:
            missing = Counter(want) - Counter(got)
            if missing:
                row = next(iter(missing))
                return f"expected row {row!r} is missing from the result"
            return None
    for index, (w, g) in enumerate(zip(want, got, strict=True)):
        if not _rows_equal(w, g, rel_tol):
            return f"row {index} differs: expected {w!r}, got {g!r}"
    return None


def _hashable(value: Any) -> Any:
    """Lists and structs as tuples, so rows can be counted as multisets."""
    if isinstance(value, list | tuple):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple((k, _hashable(v)) for k, v in value.items())
    return value


def _has_float(rows: list[tuple[Any, ...]]) -> bool:
    # Every row counts: the first may hold NULL where the others hold floats.
    return any(isinstance(value, float) for row in rows for value in row)


def _sort_key(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """Order rows of mixed values and NULLs; floats are rounded so near-equal rows pair up."""
    key: list[Any] = []
    for value in row:
        if value is None:
            key.append((0, ""))
        elif isinstance(value, float):
            key.append((1, float(f"{value:.9g}") if math.isfinite(value) else str(value)))
        elif isinstance(value, int | bool):
            key.append((1, value))
        else:
            key.append((2, str(value)))
    return tuple(key)


def _rows_equal(want: tuple[Any, ...], got: tuple[Any, ...], rel_tol: float) -> bool:
    return len(want) == len(got) and all(
        _equal(w, g, rel_tol) for w, g in zip(want, got, strict=True)
    )


def _equal(want: Any, got: Any, rel_tol: float) -> bool:
    if isinstance(want, float) and isinstance(got, float | int):
        if math.isnan(want):
            return math.isnan(got)
        return math.isclose(want, got, rel_tol=rel_tol, abs_tol=1e-12)
    if isinstance(want, tuple) and isinstance(got, tuple):
        return len(want) == len(got) and all(
            _equal(w, g, rel_tol) for w, g in zip(want, got, strict=True)
        )
    return bool(want == got)


def versions_read(schema: pa.Schema) -> dict[str, dict[str, Any]]:
    """What a mesh answer read, from its schema metadata: per product, the version, the
    node it came from, the newest version known and whether the version read is older."""
    raw = (schema.metadata or {}).get(b"shoal.read")
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def stale_warning(read: dict[str, dict[str, Any]]) -> str:
    """One line naming the products read at an older version than the newest known."""
    stale = [
        f"{name} version {info.get('version')} from node '{info.get('node')}' "
        f"(newest known: {info.get('newest')})"
        for name, info in sorted(read.items())
        if isinstance(info, dict) and info.get("stale")
    ]
    if not stale:
        return ""
    return (
        "warning: stale answer: read "
        + "; ".join(stale)
        + ", because no holder of the newest version answered"
    )
