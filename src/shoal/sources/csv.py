"""CSV and TSV files, read by DuckDB's CSV reader.

DuckDB sniffs the dialect (delimiter, quoting, header) and the column types and parses in
parallel, straight into Arrow batches; quoted fields may hold newlines. Shoal adds around it
what shop exports need:

* Encoding: see `shoal.sources.textfile` (UTF-8, UTF-16 with a BOM, else Windows-1252 or
  Latin-1, transcoded to a UTF-8 scratch copy that is deleted on exit).
* Dialect: `.tsv` and `.tab` files are tab-separated; --delimiter and --header win over the
  sniffer. A file of one line is a header without rows (a zero-row stream whose columns are
  strings): the sniffer would otherwise call it a data row.
* Numbers: DuckDB reads `.` as the decimal mark only. A German export's `3,50` (with `;`
  as delimiter) stays the text "3,50"; a data contract can type it later.
* Types: files up to 64 MiB (`EXACT_TYPES_UP_TO`) are typed from every row. Bigger files
  are typed from DuckDB's sample of rows; a later value that does not fit raises
  `TypeDriftError` naming the line and column, and a publish reads the file again with
  exact types (`SourceOptions.exact_types`).
* Refused with a one-line error instead of being skipped or padded silently: empty and
  binary files, ragged rows, unterminated quotes, lines over 8 MiB.
"""

from __future__ import annotations

import csv as stdlib_csv
import re
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, ClassVar

import duckdb
import pyarrow as pa

from shoal.engine import trusted_connection
from shoal.errors import SourceError, TypeDriftError
from shoal.sources.base import BATCH_ROWS, SourceOptions
from shoal.sources.files import (
    EXACT_TYPES_UP_TO,
    describe_path,
    existing_file,
    scratch_folder,
    sql_string,
    utf8_named,
)
from shoal.sources.textfile import MAX_LINE_BYTES, detect_encoding, needs_transcoding, transcode

__all__ = ["CsvSource"]

_TAB_SUFFIXES = (".tsv", ".tab")
_USUAL_DELIMITERS = (",", ";", "\t", "|")


class CsvSource:
    name: ClassVar[str] = "csv"
    patterns: ClassVar[tuple[str, ...]] = ("*.csv", "*.tsv", "*.tab", "*.txt")

    def matches(self, spec: str) -> bool:
        return spec.lower().endswith((".csv", ".tsv", ".tab", ".txt"))

    @contextmanager
    def open(self, spec: str, options: SourceOptions) -> Iterator[pa.RecordBatchReader]:
        path = existing_file(spec)
        encoding = detect_encoding(path, given=options.encoding)
        delimiter = options.delimiter
        if delimiter is None and spec.lower().endswith(_TAB_SUFFIXES):
            delimiter = "\t"
        with ExitStack() as stack:
            readable = path
            if needs_transcoding(encoding):
                scratch = stack.enter_context(scratch_folder(options.scratch_dir, "csv-"))
                readable = transcode(path, encoding, scratch / "utf8.csv")
            named = stack.enter_context(utf8_named(readable, options.scratch_dir))
            con = stack.enter_context(trusted_connection())
            reader = _CsvRead(con, named, describe_path(path), delimiter)
            yield reader.open(options.header, options.exact_types)


class _CsvRead:
    """One read of one file: the DuckDB query, and turning its errors into plain words."""

    def __init__(self, con: Any, path: Path, shown: str, delimiter: str | None) -> None:
        self.con = con
        self.path = path
        self.shown = shown
        self.delimiter = delimiter
        self.location = sql_string(str(path))

    def open(self, header: bool | None, exact_types: bool) -> pa.RecordBatchReader:
        if header is None and _one_line(self.path):
            header = True  # a single line can only be a header: rows need one above them
        exact = exact_types or self.path.stat().st_size <= EXACT_TYPES_UP_TO
        params = [
            f"max_line_size={MAX_LINE_BYTES}",
            "strict_mode=true",  # refuse rows that break the dialect instead of guessing
            "null_padding=false",  # a short row is an error, not a row padded with nulls
            "skip=0",  # never drop leading lines silently
        ]
        if self.delimiter is not None:
            params.append(f"delim={sql_string(self.delimiter)}")
        if header is not None:
            params.append(f"header={str(header).lower()}")
        if exact:
            params.append("sample_size=-1")
        sql = f"SELECT * FROM read_csv({self.location}, {', '.join(params)})"
        try:
            relation = self.con.sql(sql)  # the sniffer runs here
        except duckdb.Error as exc:
            raise self._diagnose() or self._error(exc, exact) from exc
        if len(relation.columns) == 1 and self.delimiter is None:
            # A file whose rows disagree makes the sniffer fall back to one column holding
            # whole lines; if a usual delimiter is there, read with it to find the bad row.
            error = self._diagnose()
            if error is not None:
                raise error
        try:
            reader = relation.to_arrow_reader(BATCH_ROWS)
        except duckdb.Error as exc:
            raise self._error(exc, exact) from exc
        return pa.RecordBatchReader.from_batches(reader.schema, self._guarded(reader, exact))

    def _guarded(self, reader: pa.RecordBatchReader, exact: bool) -> Iterator[pa.RecordBatch]:
        """Yield the batches; parse errors found mid-file become SourceErrors too."""
        try:
            yield from reader
        except (duckdb.Error, pa.ArrowException, OSError) as exc:
            # DuckDB's errors reach a stream reader as Arrow I/O errors.
            raise self._error(exc, exact) from exc

    def _diagnose(self) -> SourceError | None:
        """Find the first row that breaks the file's apparent dialect, without sniffing.

        The sniffer only says it cannot decide; a strict read with the delimiter the first
        lines use, all text, names the line and what is wrong with it.
        """
        delimiter = self.delimiter or _usual_delimiter(self.path)
        if delimiter is None:
            return None
        width = _first_line_width(self.path, delimiter)
        columns = ", ".join(f"'c{i}': 'VARCHAR'" for i in range(width))
        sql = (
            f"SELECT count(*) FROM read_csv({self.location}, auto_detect=false, "
            f"delim={sql_string(delimiter)}, quote='\"', escape='\"', header=false, "
            f"columns={{{columns}}}, strict_mode=true, null_padding=false, "
            f"max_line_size={MAX_LINE_BYTES})"
        )
        try:
            self.con.sql(sql).fetchall()
        except duckdb.Error as exc:
            return self._error(exc, exact=True)
        return None

    def _error(self, exc: Exception, exact: bool) -> SourceError:
        """Turn a DuckDB CSV error into one line that says what is wrong and where."""
        text = str(exc)
        # DuckDB appends a list of possible fixes that mentions every option; only the
        # part before it says what happened.
        what = re.split(r"\n\s*Possible (?:fixes|solutions|Solution)", text, maxsplit=1)[0]
        line = _group(r"Line: (\d+)", what)
        at = f" (line {line})" if line else ""
        where = self.shown
        if "Maximum line size" in what:
            return SourceError(f"{where} has a line longer than {MAX_LINE_BYTES // 2**20} MiB")
        if "Expected Number of Columns" in what:
            expected = _group(r"Expected Number of Columns: (\d+)", what)
            found = _group(r"Found: (\d+)", what)
            return SourceError(
                f"{where}: line {line} has {_fields(found)}, the first line has "
                f"{_fields(expected)} (ragged rows)",
                hint="check the delimiter (--delimiter) and quoting; remove title lines "
                "above the header",
            )
        if "unterminated quote" in what:
            return SourceError(
                f"{where}: a quoted field starting on line {line} is never closed "
                "(is the file cut off?)"
            )
        if "not possible to automatically detect" in what:
            return SourceError(
                f"cannot work out how {where} is laid out: its rows do not share one "
                "delimiter and quoting",
                hint="give the delimiter with --delimiter; check for ragged rows",
            )
        if "Invalid unicode" in what:
            return SourceError(
                f"{where} is not valid UTF-8{at}", hint="give its encoding with --encoding"
            )
        if "Could not convert" in what or "Conversion Error" in what:
            column = _group(r'converting column "([^"]*)"', what)
            value = _group(r"(Could not convert [^\n]*)", what) or "a value does not fit"
            message = f"{where}{at}, column {column!r}: {value}"
            if exact:
                return SourceError(
                    message, hint="give the column's type in a data contract (--contract)"
                )
            return TypeDriftError(
                f"{message} (its type was sniffed from the first rows)",
                hint="read it again with exact types; a publish does that by itself",
            )
        return SourceError(f"cannot read {where} as CSV: {_first_line(what)}")


def _one_line(path: Path) -> bool:
    """Tell whether the file holds at most one line (a trailing newline allowed)."""
    with path.open("rb") as handle:
        head = handle.read(MAX_LINE_BYTES + 2)
    return len(head) <= MAX_LINE_BYTES and b"\n" not in head.rstrip(b"\r\n")


def _usual_delimiter(path: Path) -> str | None:
    """The usual delimiter found on most of the first lines, if any."""
    with path.open("r", encoding="utf-8", errors="replace", newline="") as handle:
        lines = [handle.readline(MAX_LINE_BYTES) for _ in range(20)]
    counts = {d: sum(d in line for line in lines) for d in _USUAL_DELIMITERS}
    best = max(_USUAL_DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] else None


def _first_line_width(path: Path, delimiter: str) -> int:
    """Count the fields of the first line, with the standard library's CSV parser."""
    with path.open("r", encoding="utf-8", errors="replace", newline="") as handle:
        first = handle.readline(MAX_LINE_BYTES).lstrip("\ufeff")
    row = next(stdlib_csv.reader([first], delimiter=delimiter), [])
    return max(len(row), 1)


def _fields(count: str | None) -> str:
    return f"{count} field" if count == "1" else f"{count} fields"


def _group(pattern: str, text: str) -> str | None:
    match = re.search(pattern, text)
    return match.group(1) if match else None


def _first_line(text: str) -> str:
    for line in text.splitlines():
        cleaned = re.sub(r"^(Invalid Input|Conversion|IO) Error: ", "", line.strip())
        if cleaned:
            return cleaned[:300]
    return text[:300]
