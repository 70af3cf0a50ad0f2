"""CSV and TSV files, read by DuckDB's CSV reader.

DuckDB sniffs the dialect (delimiter, quoting, header) and the column types and parses in
parallel; quoted fields may hold newlines. Shoal adds what shop exports need around it:

* Encoding: a UTF-8 or UTF-16 byte-order mark decides; otherwise the whole file is checked
  as UTF-8 (fast: CPython's decoder has an ASCII fast path), and a file that is not UTF-8 is
  read as Windows-1252 (the encoding Excel and till software write in Western Europe; it
  maps 0x80 to €), or Latin-1 when Windows-1252 cannot decode it. Non-UTF-8 input is
  transcoded, streaming, into a UTF-8 scratch copy that is deleted afterwards.
* Types are sniffed from a sample of rows (fast); a later value that does not fit raises
  `TypeDriftError`, and the publish reads the file again with exact types.
* Safety: an empty file, a binary file (NUL bytes) and ragged rows are refused with a clear
  error instead of being skipped silently; lines longer than 8 MiB are refused.
"""

from __future__ import annotations

import codecs
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import duckdb
import pyarrow as pa

from shoal.engine import trusted_connection
from shoal.errors import SourceError, TypeDriftError
from shoal.sources.base import BATCH_ROWS, SourceOptions
from shoal.sources.files import describe_path, existing_file, sql_string, utf8_named

__all__ = ["CsvSource"]

MAX_LINE_BYTES = 8 * 1024 * 1024
_CHUNK = 16 * 1024 * 1024
_BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


class CsvSource:
    name: ClassVar[str] = "csv"
    patterns: ClassVar[tuple[str, ...]] = ("*.csv", "*.tsv", "*.tab", "*.txt")

    def matches(self, spec: str) -> bool:
        return spec.lower().endswith((".csv", ".tsv", ".tab", ".txt"))

    @contextmanager
    def open(self, spec: str, options: SourceOptions) -> Iterator[pa.RecordBatchReader]:
        path = existing_file(spec)
        encoding = options.encoding or detect_encoding(path)
        scratch: Path | None = None
        try:
            readable = path
            if _normalised(encoding) not in ("utf-8", "utf8", "ascii"):
                scratch = Path(tempfile.mkdtemp(prefix="csv-", dir=options.scratch_dir))
                readable = transcode(path, encoding, scratch / "utf8.csv")
            delimiter = options.delimiter
            if delimiter is None and spec.lower().endswith((".tsv", ".tab")):
                delimiter = "\t"
            with utf8_named(readable, options.scratch_dir) as named, trusted_connection() as con:
                yield _read(con, named, path, delimiter, options.header, options.exact_types)
        finally:
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)


def detect_encoding(path: Path) -> str:
    """Name the encoding of a text file; refuse empty, binary and over-long-line files.

    One pass over the bytes checks UTF-8 and line lengths together; DuckDB's own sniffer
    needs minutes to give up on a gigabyte-long line, this pass about a second.
    """
    with path.open("rb") as handle:
        head = handle.read(64 * 1024)
        if not head:
            raise SourceError(f"{describe_path(path)} is empty")
        if b"\x00" in head and not head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            raise SourceError(f"{describe_path(path)} looks binary, not a text CSV file")
        handle.seek(0)
        decoder = codecs.getincrementaldecoder("utf-8")()
        utf8 = True
        since_newline = 0
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            since_newline = _check_line_lengths(chunk, since_newline, path)
            if utf8:
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError:
                    utf8 = False
        if utf8:
            try:
                decoder.decode(b"", final=True)
            except UnicodeDecodeError:
                utf8 = False
    for bom, encoding in _BOMS:
        if head.startswith(bom):
            return encoding
    return "utf-8" if utf8 else _legacy_encoding(path)


def _check_line_lengths(chunk: bytes, since_newline: int, path: Path) -> int:
    """Give the bytes after the chunk's last newline; refuse a line over the limit."""
    first = chunk.find(b"\n")
    if first < 0:
        since_newline += len(chunk)
    else:
        longest_inside = _longest_gap(chunk, first)
        if since_newline + first > MAX_LINE_BYTES or longest_inside > MAX_LINE_BYTES:
            since_newline = MAX_LINE_BYTES + 1
        else:
            since_newline = len(chunk) - chunk.rfind(b"\n") - 1
    if since_newline > MAX_LINE_BYTES:
        raise SourceError(
            f"{describe_path(path)} has a line longer than {MAX_LINE_BYTES // 2**20} MiB"
        )
    return since_newline


def _longest_gap(chunk: bytes, first: int) -> int:
    """Longest stretch between newlines in a chunk, probing only where one could hide.

    A gap longer than the limit must contain a whole window of `MAX_LINE_BYTES` without a
    newline, so looking for a newline in each such window is enough (a few calls a chunk).
    """
    start = first
    while start + MAX_LINE_BYTES < len(chunk):
        nxt = chunk.find(b"\n", start + 1, start + MAX_LINE_BYTES + 2)
        if nxt < 0:
            return MAX_LINE_BYTES + 1
        start = chunk.rfind(b"\n", nxt, start + MAX_LINE_BYTES + 1)
    return 0


def _legacy_encoding(path: Path) -> str:
    decoder = codecs.getincrementaldecoder("cp1252")()
    with path.open("rb") as handle:
        try:
            for chunk in iter(lambda: handle.read(_CHUNK), b""):
                decoder.decode(chunk)
        except UnicodeDecodeError:
            return "latin-1"
    return "cp1252"


def transcode(source: Path, encoding: str, target: Path) -> Path:
    """Copy `source` as UTF-8 into `target`, streaming, so DuckDB can read it."""
    try:
        codecs.lookup(encoding)
    except LookupError as exc:
        raise SourceError(f"unknown encoding {encoding!r}") from exc
    try:
        with (
            source.open("r", encoding=encoding, newline="") as reader,
            target.open("w", encoding="utf-8", newline="") as writer,
        ):
            shutil.copyfileobj(reader, writer, _CHUNK)
    except UnicodeDecodeError as exc:
        raise SourceError(
            f"{describe_path(source)} is not valid {encoding} (byte {exc.start})"
        ) from exc
    return target


def _read(
    con: Any,
    path: Path,
    shown: Path,
    delimiter: str | None,
    header: bool | None,
    exact_types: bool,
) -> pa.RecordBatchReader:
    location = sql_string(str(path))
    sniffed_delimiter, sniffed_header = _sniff(con, location, shown)
    options = [
        f"delim={sql_string(delimiter or sniffed_delimiter)}",
        f"header={'true' if (sniffed_header if header is None else header) else 'false'}",
        "skip=0",  # never drop leading lines silently; ragged files are refused instead
        f"max_line_size={MAX_LINE_BYTES}",
        "strict_mode=true",
        "null_padding=false",
    ]
    if exact_types:
        # Every row is looked at to type the columns: about three times slower, so only
        # when a sampled read met a value its type did not fit (see TypeDriftError).
        options.append("sample_size=-1")
    sql = f"SELECT * FROM read_csv({location}, {', '.join(options)})"
    try:
        relation = con.sql(sql)
        reader = relation.to_arrow_reader(BATCH_ROWS)
    except duckdb.Error as exc:
        raise _csv_error(exc, shown) from exc
    return _guarded(reader, shown)


def _sniff(con: Any, location: str, shown: Path) -> tuple[str, bool]:
    try:
        row = con.execute(
            f"SELECT Delimiter, HasHeader, len(Columns) FROM sniff_csv({location}, "
            f"max_line_size={MAX_LINE_BYTES}, sample_size=20480)"
        ).fetchall()[0]
    except duckdb.Error as exc:
        raise _csv_error(exc, shown) from exc
    delimiter, has_header, columns = str(row[0]), bool(row[1]), int(row[2])
    if columns == 1:
        # A ragged file makes the sniffer fall back to one column holding whole lines;
        # if the first line has a usual delimiter, read with it so ragged rows show.
        delimiter = _usual_delimiter(shown) or delimiter
    if _line_count_at_most_one(shown):
        has_header = True  # one line can only be a header (a data row needs a header above)
    return delimiter, has_header


def _usual_delimiter(path: Path) -> str | None:
    with path.open("rb") as handle:
        first = handle.readline(MAX_LINE_BYTES)
    counts = {d: first.count(d.encode()) for d in (",", ";", "\t", "|")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else None


def _line_count_at_most_one(path: Path) -> bool:
    with path.open("rb") as handle:
        head = handle.read(MAX_LINE_BYTES)
    return head.rstrip(b"\r\n").count(b"\n") == 0 and len(head) < MAX_LINE_BYTES


def _guarded(reader: pa.RecordBatchReader, shown: Path) -> pa.RecordBatchReader:
    """Wrap the stream so parse errors found mid-file become SourceErrors too."""

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            yield from reader
        except (duckdb.Error, pa.ArrowInvalid, OSError) as exc:
            # DuckDB's errors reach a stream reader as Arrow I/O errors.
            raise _csv_error(exc, shown) from exc

    return pa.RecordBatchReader.from_batches(reader.schema, batches())


def _csv_error(exc: Exception, shown: Path) -> SourceError:
    text = str(exc)
    where = describe_path(shown)
    if "Maximum line size" in text or "max_line_size" in text:
        return SourceError(f"{where} has a line longer than {MAX_LINE_BYTES // 2**20} MiB")
    if "not possible to automatically detect" in text or "Expected Number of Columns" in text:
        line = _line_of(text)
        return SourceError(
            f"{where}: rows have different numbers of fields{line} (ragged rows)",
            hint="check the delimiter (--delimiter) and quoting of the file",
        )
    if "Could not convert" in text or "Conversion Error" in text:
        return TypeDriftError(
            f"{where}: a value does not fit its column's detected type{_line_of(text)}: "
            f"{_first_line(text)}",
            hint="publish a contract with the column's type (--contract), or fix the value",
        )
    return SourceError(f"cannot read {where} as CSV: {_first_line(text)}")


def _line_of(text: str) -> str:
    marker = "Line: "
    if marker in text:
        number = text.split(marker, 1)[1].split()[0].strip(",.")
        return f" (line {number})"
    return ""


def _first_line(text: str) -> str:
    for line in text.splitlines():
        cleaned = line.replace("Invalid Input Error: ", "").replace("Conversion Error: ", "")
        if cleaned.strip():
            return cleaned.strip()[:300]
    return text[:300]


def _normalised(encoding: str) -> str:
    try:
        return codecs.lookup(encoding).name
    except LookupError as exc:
        raise SourceError(f"unknown encoding {encoding!r}") from exc
