"""Excel and OpenDocument spreadsheets, read with python-calamine (a Rust reader).

The first sheet (or `--sheet NAME`) is read. Its first non-empty row is the header: blank
header cells become `column_N` (N counts from the first column of the data), repeated names
get `_2`, `_3`, ... Rows after the header are the data; empty cells are nulls and empty rows
at the end are dropped (empty rows between data rows are kept, as rows of nulls).

Formulas give the value Excel cached when it saved the file (a file written by a library
that computes nothing, such as openpyxl, has no cached values: those cells read as
empty). Merged cells give their value in the top-left cell and null elsewhere.

Each column gets one type from all its rows, so a late value can never contradict it:
numbers are int64 when every one is whole (Excel stores all numbers as floats) and float64
otherwise; then bool, date32, timestamp[us] (dates and date-times mixed), and string for
anything else or any mix of kinds, with each value written as text (whole floats without
".0"). The sheet is read twice, once to type the columns and once to stream batches of
`BATCH_ROWS` rows, so Python never holds more than one batch of cells.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import pyarrow as pa
from python_calamine import CalamineError, CalamineSheet, CalamineWorkbook

from shoal.errors import SourceError
from shoal.sources.base import BATCH_ROWS, SourceOptions
from shoal.sources.files import non_empty_file, utf8_named

__all__ = ["ExcelSource", "header_names"]

_SUFFIXES = (".xlsx", ".xlsm", ".xls", ".xlsb", ".ods")
# What calamine raises for files it cannot take apart (bad zip, bad XML, encrypted, ...).
_UNREADABLE = (CalamineError, OSError, ValueError)
_INT64_LIMIT = 2**63


class ExcelSource:
    name: ClassVar[str] = "excel"
    patterns: ClassVar[tuple[str, ...]] = tuple(f"*{s}" for s in _SUFFIXES)

    def matches(self, spec: str) -> bool:
        return spec.lower().endswith(_SUFFIXES)

    @contextmanager
    def open(self, spec: str, options: SourceOptions) -> Iterator[pa.RecordBatchReader]:
        path, shown = non_empty_file(spec)
        with ExitStack() as stack:
            named = stack.enter_context(utf8_named(path, options.scratch_dir))
            try:
                workbook = CalamineWorkbook.from_path(str(named))
            except _UNREADABLE as exc:
                raise SourceError(f"{shown} is not a readable spreadsheet: {exc}") from exc
            stack.callback(workbook.close)
            sheet_name = _pick_sheet(list(workbook.sheet_names), options.sheet, shown)
            where = f"{shown} (sheet {sheet_name!r})"
            try:
                sheet = workbook.get_sheet_by_name(sheet_name)
                layout = survey(sheet.iter_rows(), where)
            except _UNREADABLE as exc:
                raise SourceError(f"cannot read {where}: {exc}") from exc
            yield pa.RecordBatchReader.from_batches(layout.schema, _batches(sheet, layout))


def _pick_sheet(names: list[str], wanted: str | None, shown: str) -> str:
    if not names:
        raise SourceError(f"{shown} has no sheets")
    if wanted is None:
        return names[0]
    if wanted not in names:
        raise SourceError(f"{shown} has no sheet {wanted!r}; its sheets: {', '.join(names)}")
    return wanted


@dataclass(frozen=True)
class Layout:
    """Where a sheet's table lies (row indexes) and its typed columns."""

    header_row: int
    last_row: int
    schema: pa.Schema


def survey(rows: Iterable[Sequence[Any]], where: str) -> Layout:
    """Find the header, the last data row and each column's type, holding no rows."""
    header: Sequence[Any] | None = None
    header_row = last_row = -1
    kinds: list[set[str]] = []
    whole: list[bool] = []
    for index, row in enumerate(rows):
        if header is None:
            if any(_present(v) for v in row):
                header, header_row, last_row = row, index, index
            continue
        seen = False
        for column, value in enumerate(row):
            if not _present(value):
                continue
            seen = True
            while len(kinds) <= column:
                kinds.append(set())
                whole.append(True)
            kind = _kind(value)
            kinds[column].add(kind)
            if kind in ("int", "float") and not (
                float(value).is_integer() and abs(value) < _INT64_LIMIT
            ):
                whole[column] = False
        if seen:
            last_row = index
    if header is None:
        raise SourceError(f"{where} is empty")
    named_width = max((i + 1 for i, v in enumerate(header) if _present(v)), default=0)
    width = max(named_width, len(kinds))
    kinds += [set() for _ in range(width - len(kinds))]
    whole += [True] * (width - len(whole))
    types = [_column_type(k, w) for k, w in zip(kinds, whole, strict=True)]
    names = header_names(header, width)
    return Layout(header_row, last_row, pa.schema(list(zip(names, types, strict=True))))


def header_names(header: Sequence[Any], width: int) -> list[str]:
    """Give unique column names: blank headers become column_N, repeats get _2, _3, ..."""
    names: list[str] = []
    taken: set[str] = set()
    for index in range(width):
        raw = header[index] if index < len(header) else None
        base = _text(raw).strip() if _present(raw) else ""
        base = base or f"column_{index + 1}"
        name, suffix = base, 1
        while name in taken:
            suffix += 1
            name = f"{base}_{suffix}"
        taken.add(name)
        names.append(name)
    return names


def _batches(sheet: CalamineSheet, layout: Layout) -> Iterator[pa.RecordBatch]:
    width = len(layout.schema)
    buffer: list[list[Any]] = [[] for _ in range(width)]
    for index, row in enumerate(sheet.iter_rows()):
        if index <= layout.header_row:
            continue
        if index > layout.last_row:
            break
        for column in range(width):
            value = row[column] if column < len(row) else None
            buffer[column].append(value if _present(value) else None)
        if len(buffer[0]) == BATCH_ROWS:
            yield _batch(buffer, layout.schema)
            buffer = [[] for _ in range(width)]
    if buffer[0]:
        yield _batch(buffer, layout.schema)


def _batch(columns: list[list[Any]], schema: pa.Schema) -> pa.RecordBatch:
    arrays = [_array(values, field.type) for values, field in zip(columns, schema, strict=True)]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _column_type(kinds: set[str], whole: bool) -> pa.DataType:
    if kinds == {"bool"}:
        return pa.bool_()
    if kinds and kinds <= {"int", "float"}:
        return pa.int64() if whole else pa.float64()
    if kinds == {"date"}:
        return pa.date32()
    if kinds and kinds <= {"date", "datetime"}:
        return pa.timestamp("us")
    return pa.string()  # no values at all, text, or a mix of kinds


def _array(values: list[Any], kind: pa.DataType) -> pa.Array:
    if kind == pa.int64():
        return pa.array([None if v is None else int(v) for v in values], kind)
    if kind == pa.float64():
        return pa.array([None if v is None else float(v) for v in values], kind)
    if kind == pa.timestamp("us"):
        return pa.array([_as_datetime(v) for v in values], kind)
    if kind == pa.string():
        return pa.array([None if v is None else _text(v) for v in values], kind)
    return pa.array(values, kind)


def _present(value: Any) -> bool:
    """Calamine gives empty cells as ''; they are missing values."""
    return value is not None and value != ""


def _kind(value: Any) -> str:
    if isinstance(value, bool):  # before int: bool is a subclass of int
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, dt.datetime):  # before date: datetime is a subclass of date
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
