"""Collecting contract failures: one per (rule, column), counts summed, a few sample rows.

Samples end up in error messages, logs and HTTP responses, so they are made JSON-safe here
(dates as ISO text, decimals as exact text, bytes as hex) and the values of columns marked
`pii: true` are masked: a failed publish must not copy personal data into a log.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Final

import pyarrow as pa
import pyarrow.compute as pc

from shoal.errors import ContractViolation, RuleFailure

__all__ = ["MASK", "MAX_SAMPLES", "FailureLog", "json_safe"]

MAX_SAMPLES: Final = 5
MASK: Final = "***"
MAX_SAMPLE_TEXT: Final = 200


class FailureLog:
    """Failures found so far; adding the same (rule, column) again adds to its count."""

    def __init__(self, masked_columns: Iterable[str] = ()) -> None:
        self._masked = frozenset(masked_columns)
        self._by_key: dict[tuple[str, str | None], RuleFailure] = {}

    @property
    def failures(self) -> list[RuleFailure]:
        return list(self._by_key.values())

    def __bool__(self) -> bool:
        return bool(self._by_key)

    def add(
        self,
        rule: str,
        column: str | None,
        count: int,
        detail: str,
        rows: pa.Table | pa.RecordBatch | None = None,
    ) -> None:
        """Record `count` more failures of `rule` on `column`, with sample rows from `rows`."""
        failure = self._by_key.get((rule, column))
        if failure is None:
            failure = RuleFailure(rule, column, 0, detail, [])
            self._by_key[(rule, column)] = failure
        failure.count += count
        room = MAX_SAMPLES - len(failure.samples)
        if rows is not None and room > 0:
            failure.samples.extend(self.sample_rows(rows.slice(0, room)))

    def sample_rows(self, rows: pa.Table | pa.RecordBatch) -> list[dict[str, Any]]:
        """Rows as JSON-safe dicts, personal data masked."""
        columns = {
            name: [MASK] * rows.num_rows if name in self._masked else _column_values(column)
            for name, column in zip(rows.column_names, rows.columns, strict=True)
        }
        return [{name: values[i] for name, values in columns.items()} for i in range(rows.num_rows)]

    def raise_if_failed(self, product: str) -> None:
        if self._by_key:
            raise ContractViolation(product, self.failures)


def json_safe(value: Any) -> Any:
    """`value` as something `json.dumps` writes without help or loss."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, str):
        return _shorten(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return str(value)
    if isinstance(value, bytes):
        return _shorten(value.hex())
    if isinstance(value, Mapping):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return str(value)


def _column_values(column: pa.Array | pa.ChunkedArray) -> list[Any]:
    try:
        return [json_safe(value) for value in column.to_pylist()]
    except (ValueError, OverflowError, pa.ArrowException):
        pass
    # Values Python cannot hold (nanoseconds, a date in year 10000) are shown as Arrow's text.
    try:
        return [json_safe(value) for value in pc.cast(column, pa.string()).to_pylist()]
    except (ValueError, OverflowError, pa.ArrowException):
        return [None] * len(column)


def _shorten(text: str) -> str:
    return text if len(text) <= MAX_SAMPLE_TEXT else text[: MAX_SAMPLE_TEXT - 1] + "…"
