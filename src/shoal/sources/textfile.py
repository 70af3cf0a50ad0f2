"""Text files before a parser sees them: their encoding, and the checks that refuse non-text.

Shop exports come from Excel, tills and old ERP systems, so a text file may be UTF-8 (with
or without a byte-order mark), UTF-16 with a BOM, or a legacy Western code page. The rules:

* a UTF-8 BOM means UTF-8, a UTF-16 BOM means UTF-16;
* otherwise the WHOLE file is checked as UTF-8 (a stray byte in the last line must not
  be missed); ASCII chunks are skipped at memory speed, the rest goes through CPython's
  incremental decoder, 16 MiB at a time;
* a file that is not UTF-8 is Windows-1252, the code page Excel and till software write in
  Western Europe (it maps 0x80 to €, which Latin-1 leaves as a control character), or
  Latin-1 if Windows-1252 cannot decode it (Latin-1 decodes every byte).

The same pass refuses an empty file, a binary one (NUL bytes in its first 64 KiB) and one
with a line longer than `MAX_LINE_BYTES`: DuckDB's own reader takes minutes to give up on a
gigabyte-long line, this pass about a second. A file that is not UTF-8 is transcoded,
streaming, into a UTF-8 scratch copy for the parser.
"""

from __future__ import annotations

import codecs
import shutil
from pathlib import Path
from typing import BinaryIO

from shoal.errors import SourceError
from shoal.sources.files import describe_path

__all__ = [
    "MAX_LINE_BYTES",
    "canonical_encoding",
    "detect_encoding",
    "needs_transcoding",
    "transcode",
]

MAX_LINE_BYTES = 8 * 1024 * 1024
CHUNK_BYTES = 16 * 1024 * 1024
_HEAD_BYTES = 64 * 1024
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


def detect_encoding(path: Path, *, given: str | None = None) -> str:
    """Name the encoding of the text file at `path`; refuse empty, binary or long-line files.

    With `given` (the user's --encoding) the file is still checked, but not decoded.
    """
    wide = given is not None and canonical_encoding(given).startswith(("utf-16", "utf-32"))
    with path.open("rb") as handle:
        head = handle.read(_HEAD_BYTES)
        if not head:
            raise SourceError(f"{describe_path(path)} is empty")
        if b"\x00" in head and not wide and not head.startswith(_UTF16_BOMS):
            raise SourceError(
                f"{describe_path(path)} looks binary, not a text CSV file",
                hint="for UTF-16 text without a byte-order mark give --encoding utf-16",
            )
        handle.seek(0)
        utf8 = _scan(handle, path, decode=given is None)
    if given is not None:
        return given
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith(_UTF16_BOMS):
        return "utf-16"
    return "utf-8" if utf8 else _legacy_encoding(path)


def canonical_encoding(encoding: str) -> str:
    """Give Python's name for `encoding` ('UTF8' -> 'utf-8'); refuse one it does not know."""
    try:
        return codecs.lookup(encoding).name
    except LookupError as exc:
        raise SourceError(f"unknown encoding {encoding!r}") from exc


def needs_transcoding(encoding: str) -> bool:
    """Tell whether the parser needs a UTF-8 copy (it reads UTF-8, with or without a BOM)."""
    return canonical_encoding(encoding) not in ("utf-8", "utf-8-sig", "ascii")


def transcode(source: Path, encoding: str, target: Path) -> Path:
    """Copy `source` as UTF-8 into `target`, streaming, and give `target`."""
    canonical_encoding(encoding)
    try:
        with (
            source.open("r", encoding=encoding, newline="") as reader,
            target.open("w", encoding="utf-8", newline="") as writer,
        ):
            shutil.copyfileobj(reader, writer, CHUNK_BYTES)
    except UnicodeDecodeError as exc:
        raise SourceError(
            f"{describe_path(source)} is not valid {encoding} text (a bad byte near offset "
            f"{exc.start} of a {CHUNK_BYTES // 2**20} MiB block)",
            hint="give the file's encoding with --encoding",
        ) from exc
    return target


def _scan(handle: BinaryIO, path: Path, *, decode: bool) -> bool:
    """Read the whole file once: refuse over-long lines; with `decode`, tell if it is UTF-8."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    utf8 = decode
    open_line = 0
    for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
        open_line = _check_lines(chunk, open_line, path)
        if utf8 and not (chunk.isascii() and decoder.getstate()[0] == b""):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError:
                utf8 = False
    if utf8:
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            utf8 = False
    return utf8


def _check_lines(chunk: bytes, open_line: int, path: Path) -> int:
    """Give the length of the line still open at the end of `chunk`; refuse a long line.

    `open_line` is the length of the line left open by the previous chunk. Each step jumps
    to the last newline within the next `MAX_LINE_BYTES` bytes, so a chunk costs a few
    searches at memory speed however many lines it holds.
    """
    start = 0
    while True:
        # A newline must come within the bytes the open line may still grow by.
        window_end = start + (MAX_LINE_BYTES - open_line) + 1
        if window_end > len(chunk):
            last = chunk.rfind(b"\n", start)
            return open_line + len(chunk) - start if last < 0 else len(chunk) - last - 1
        last = chunk.rfind(b"\n", start, window_end)
        if last < 0:
            raise SourceError(
                f"{describe_path(path)} has a line longer than {MAX_LINE_BYTES // 2**20} MiB",
                hint="is it really a line-based text file? Check the export settings",
            )
        start, open_line = last + 1, 0


def _legacy_encoding(path: Path) -> str:
    """Windows-1252 if it decodes the whole file, else Latin-1 (which decodes anything)."""
    decoder = codecs.getincrementaldecoder("cp1252")()
    with path.open("rb") as handle:
        try:
            for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
                decoder.decode(chunk)
        except UnicodeDecodeError:
            return "latin-1"
    return "cp1252"
