"""JSON and newline-delimited JSON files, read by DuckDB's JSON reader.

A `.json` file may hold a top-level array of objects or one object per line (DuckDB tells
which); `.ndjson` and `.jsonl` hold one object per line. Each object is a row, its keys the
columns: nested objects become structs, arrays lists. A key whose values mix kinds (`12345`
here, `"01234"` there) becomes a text column holding each value as written, strings
without their quotes. Anything that is not objects (a scalar, an array of numbers, an empty
array) is refused, as are malformed files, with the line where parsing stopped.

Types follow the CSV rule (`EXACT_TYPES_UP_TO`): small files are typed from every object,
bigger ones from DuckDB's sample, and a later object that does not fit (a new key, a value
of another kind) raises `TypeDriftError` so a publish reads again with exact types.
JSON is UTF-8 (RFC 8259); a byte-order mark, which Windows tools write, is dropped.
"""

from __future__ import annotations

import codecs
import re
import shutil
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, ClassVar

import duckdb
import pyarrow as pa

from shoal.engine import quote_identifier, trusted_connection
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

__all__ = ["JsonSource"]

_LINE_SUFFIXES = (".ndjson", ".jsonl")
# One object may be this big; DuckDB's default (16 MiB) refuses some legitimate exports.
_MAX_OBJECT_BYTES = 64 * 1024 * 1024


class JsonSource:
    name: ClassVar[str] = "json"
    patterns: ClassVar[tuple[str, ...]] = ("*.json", "*.ndjson", "*.jsonl")

    def matches(self, spec: str) -> bool:
        return spec.lower().endswith((".json", *_LINE_SUFFIXES))

    @contextmanager
    def open(self, spec: str, options: SourceOptions) -> Iterator[pa.RecordBatchReader]:
        path = existing_file(spec)
        shown = describe_path(path)
        with path.open("rb") as handle:
            head = handle.read(4096)
        bom = head.startswith(codecs.BOM_UTF8)
        start = head[len(codecs.BOM_UTF8) :] if bom else head
        start = start.lstrip()
        if not start:
            raise SourceError(f"{shown} is empty")
        if start[:1] not in (b"{", b"["):
            raise SourceError(
                f"{shown} does not hold JSON objects (an array of them, or one per line)"
            )
        style = "newline_delimited" if spec.lower().endswith(_LINE_SUFFIXES) else "auto"
        exact = options.exact_types or path.stat().st_size <= EXACT_TYPES_UP_TO
        with ExitStack() as stack:
            readable = path
            if bom:
                scratch = stack.enter_context(scratch_folder(options.scratch_dir, "json-"))
                readable = _without_bom(path, scratch / "data.json")
            named = stack.enter_context(utf8_named(readable, options.scratch_dir))
            con = stack.enter_context(trusted_connection())
            yield _open_reader(con, named, shown, style, exact)


def _without_bom(source: Path, target: Path) -> Path:
    """Copy `source` without its UTF-8 byte-order mark, which DuckDB's JSON reader refuses."""
    with source.open("rb") as reader, target.open("wb") as writer:
        reader.seek(len(codecs.BOM_UTF8))
        shutil.copyfileobj(reader, writer, 16 * 1024 * 1024)
    return target


def _open_reader(con: Any, path: Path, shown: str, style: str, exact: bool) -> pa.RecordBatchReader:
    params = [
        f"format={sql_string(style)}",
        "records='true'",  # rows must be objects: refuse scalars and arrays of them
        f"maximum_object_size={_MAX_OBJECT_BYTES}",
    ]
    if exact:
        params.append("sample_size=-1")
    source = f"read_json({sql_string(str(path))}, {', '.join(params)})"
    try:
        relation = con.sql(f"SELECT * FROM {source}")
        if not relation.columns:
            raise SourceError(f"{shown} holds no keys to make columns of")
        # DuckDB keeps a key whose values mix kinds as JSON text; give strings unquoted.
        columns = [
            f"json_extract_string({quote_identifier(name)}, '$') AS {quote_identifier(name)}"
            if str(kind) == "JSON"
            else quote_identifier(name)
            for name, kind in zip(relation.columns, relation.types, strict=True)
        ]
        reader = con.sql(f"SELECT {', '.join(columns)} FROM {source}").to_arrow_reader(BATCH_ROWS)
    except duckdb.Error as exc:
        raise _json_error(exc, shown, exact) from exc

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            yield from reader
        except (duckdb.Error, pa.ArrowException, OSError) as exc:
            raise _json_error(exc, shown, exact) from exc

    return pa.RecordBatchReader.from_batches(reader.schema, batches())


def _json_error(exc: Exception, shown: str, exact: bool) -> SourceError:
    """Turn a DuckDB JSON error into one line naming the file and where parsing stopped."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if "expected records" in text:
        return SourceError(
            f"{shown} does not hold JSON objects (an array of them, or one per line)"
        )
    # DuckDB names the file by the path it was given (maybe a scratch copy): say ours.
    detail = re.sub(r' in file "[^"]*"', "", text)
    detail = re.sub(r"^[A-Za-z ]+ Error: ", "", detail).strip()
    if "transform error" in detail:
        detail = re.sub(r"^JSON transform error,? in ", "", detail)
        if exact:
            return SourceError(f"cannot read {shown} as rows, {detail}")
        return TypeDriftError(
            f"{shown}, {detail} (the columns were sniffed from the first objects)",
            hint="read it again with exact types; a publish does that by itself",
        )
    if detail.startswith("Malformed JSON"):
        where = detail[len("Malformed JSON") :].strip(" ,.")
        # DuckDB (2.0) counts these lines and records from 2; the tests pin the correction.
        where = re.sub(r"(line|record/value) (\d+)", lambda m: f"{m[1]} {int(m[2]) - 1}", where)
        return SourceError(f"{shown} is not valid JSON ({where})")
    return SourceError(f"cannot read {shown} as JSON: {detail[:300]}")
