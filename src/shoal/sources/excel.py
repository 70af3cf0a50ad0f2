"""Excel and OpenDocument spreadsheets, read with python-calamine (a Rust reader).

The first sheet (or `--sheet NAME`) is read; its first row is the header. Formulas give the
value Excel cached when the file was saved; merged cells give their value in the top-left
cell and empty elsewhere. Excel stores every number as a float, so a column whose numbers
are all whole becomes an integer column. Each column gets one type over all its rows: int64,
float64, bool, date32, timestamp[us], or string when kinds mix.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

import pyarrow as pa
from python_calamine import CalamineWorkbook

from shoal.errors import SourceError
from shoal.sources.base import BATCH_ROWS, SourceOptions
from shoal.sources.files import describe_path, existing_file

__all__ = ["ExcelSource"]

_SUFFIXES = (".xlsx", ".xlsm", ".xls", ".xlsb", ".ods")


class ExcelSource:
    name: ClassVar[str] = "excel"
    patterns: ClassVar[tuple[str, ...]] = tuple(f"*{s}" for s in _SUFFIXES)

    def matches(self, spec: str) -> bool:
        return spec.lower().endswith(_SUFFIXES)

    @contextmanager
    def open(self, spec: str, options: SourceOptions) -> Iterator[pa.RecordBatchReader]:
        path = existing_file(spec)
        shown = describe_path(path)
        if path.stat().st_size == 0:
            raise SourceError(f"{shown} is empty")
        try:
            workbook = CalamineWorkbook.from_path(str(path))
        except Exception as exc:  # calamine raises its own error types for every bad file
            raise SourceError(f"{shown} is not a readable spreadsheet: {exc}") from exc
        names = list(workbook.sheet_names)
        if not names:
            raise SourceError(f"{shown} has no sheets")
        sheet_name = options.sheet or names[0]
        if sheet_name not in names:
            raise SourceError(
                f"{shown} has no sheet {sheet_name!r}; its sheets: {', '.join(names)}"
            )
        try:
            rows = workbook.get_sheet_by_name(sheet_name).to_python(skip_empty_area=False)
        except Exception as exc:
            raise SourceError(f"cannot read sheet {sheet_name!r} of {shown}: {exc}") from exc
        table = rows_to_table(rows, f"{shown} (sheet {sheet_name!r})")
        yield pa.RecordBatchReader.from_batches(table.schema, table.to_batches(BATCH_ROWS))


def rows_to_table(rows: Sequence[Sequence[Any]], shown: str) -> pa.Table:
    """Turn spreadsheet rows (header first) into a typed Arrow table."""
    rows = _drop_trailing_empty(rows)
    if not rows:
        raise SourceError(f"{shown} is empty")
    width = max(len(row) for row in rows)
    names = header_names(rows[0], width)
    columns: list[pa.Array] = []
    for index in range(width):
        values = [_cell(row[index]) if index < len(row) else None for row in rows[1:]]
        columns.append(_column(values))
    return pa.Table.from_arrays(columns, names=names)


def header_names(header: Sequence[Any], width: int) -> list[str]:
    """Give unique column names: blank headers become column_N, repeats get _2, _3, ..."""
    names: list[str] = []
    seen: dict[str, int] = {}
    for index in range(width):
        raw = header[index] if index < len(header) else None
        name = _text(raw).strip() if _cell(raw) is not None else ""
        name = name or f"column_{index + 1}"
        if name in seen:
            seen[name] += 1
            name = f"{name}_{seen[name]}"
        else:
            seen[name] = 1
        names.append(name)
    return names


def _cell(value: Any) -> Any:
    """Empty cells come back as ''; they are missing values."""
    return None if value == "" else value


def _drop_trailing_empty(rows: Sequence[Sequence[Any]]) -> list[Sequence[Any]]:
    kept = list(rows)
    while kept and all(_cell(v) is None for v in kept[-1]):
        kept.pop()
    return kept


def _column(values: list[Any]) -> pa.Array:
    present = [v for v in values if v is not None]
    kinds = {_kind(v) for v in present}
    if not kinds:
        return pa.array([None] * len(values), pa.string())
    if kinds == {"bool"}:
        return pa.array(values, pa.bool_())
    if kinds <= {"int", "float"}:
        if all(float(v).is_integer() and abs(v) < 2**63 for v in present):
            return pa.array([None if v is None else int(v) for v in values], pa.int64())
        return pa.array([None if v is None else float(v) for v in values], pa.float64())
    if kinds == {"date"}:
        return pa.array(values, pa.date32())
    if kinds <= {"date", "datetime"}:
        return pa.array([_as_datetime(v) for v in values], pa.timestamp("us"))
    return pa.array([None if v is None else _text(v) for v in values], pa.string())


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, dt.datetime):
        return "datetime"
    if isinstance(value, dt.date):
        return "date"
    return "text"


def _as_datetime(value: Any) -> dt.datetime | None:
    if value is None or isinstance(value, dt.datetime):
        return value
    return dt.datetime.combine(value, dt.time())


def _text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
