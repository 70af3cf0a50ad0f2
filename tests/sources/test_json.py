"""JSON arrays and newline-delimited JSON, and files that are not rows of objects."""

from __future__ import annotations

import json
import os

import pytest

from shoal.errors import SourceError, TypeDriftError
from shoal.sources import json as json_source
from tests.sources.util import read

ROWS = [{"id": 1, "name": "Zoë", "tags": ["a"]}, {"id": 2, "name": None, "tags": []}]


def write(tmp_path, name, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def message(excinfo, name="x.json") -> str:
    """The error's text after the file name, so a test never matches the tmp path."""
    return str(excinfo.value).split(name, 1)[-1]


def test_array_of_objects(tmp_path):
    table = read(write(tmp_path, "a.json", json.dumps(ROWS).encode()))
    assert table.to_pydict() == {"id": [1, 2], "name": ["Zoë", None], "tags": [["a"], []]}


@pytest.mark.parametrize("suffix", [".ndjson", ".jsonl", ".json"])
def test_one_object_per_line(tmp_path, suffix):
    text = "\n".join(json.dumps(r) for r in ROWS) + "\n"
    table = read(write(tmp_path, f"l{suffix}", text.encode()))
    assert table.to_pydict() == {"id": [1, 2], "name": ["Zoë", None], "tags": [["a"], []]}


def test_nested_objects_become_structs_and_missing_keys_nulls(tmp_path):
    data = b'[{"a": 1, "b": {"x": [1, 2]}}, {"a": 2, "c": "late"}]'
    table = read(write(tmp_path, "n.json", data))
    assert table.to_pylist() == [
        {"a": 1, "b": {"x": [1, 2]}, "c": None},
        {"a": 2, "b": None, "c": "late"},
    ]


def test_a_key_with_mixed_kinds_becomes_text_as_written(tmp_path):
    data = b'{"zip": 12345}\n{"zip": "01234"}\n{"zip": {"raw": 1}}\n{"zip": null}\n'
    table = read(write(tmp_path, "m.ndjson", data))
    assert str(table.schema.field("zip").type) == "string"
    assert table.column("zip").to_pylist() == ["12345", "01234", '{"raw":1}', None]


def test_byte_order_mark_is_dropped(tmp_path):
    data = b"\xef\xbb\xbf" + json.dumps(ROWS).encode()
    assert read(write(tmp_path, "b.json", data)).column("id").to_pylist() == [1, 2]


def test_non_utf8_file_name(tmp_path):
    path = tmp_path / os.fsdecode(b"caf\xe9.json")
    path.write_bytes(b'[{"a": 1}]')
    assert read(path).to_pydict() == {"a": [1]}


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", " is empty"),
        (b"   \n", " is empty"),
        (b"42", " does not hold JSON objects (an array of them, or one per line)"),
        (b'"text"', " does not hold JSON objects (an array of them, or one per line)"),
        (b"[1, 2, 3]", " does not hold JSON objects (an array of them, or one per line)"),
        (b'[{"a": 1}, 2]', " does not hold JSON objects (an array of them, or one per line)"),
        (b"[]", " does not hold JSON objects (an array of them, or one per line)"),
        (b"\x00\x01\x02garbage", " does not hold JSON objects (an array of them, or one per line)"),
        (b'{"a": 1', " is not valid JSON (at byte 8 in record/value 1: unexpected end of data)"),
    ],
)
def test_what_is_not_rows_of_objects_is_refused(tmp_path, content, expected):
    with pytest.raises(SourceError) as info:
        read(write(tmp_path, "x.json", content))
    assert message(info) == expected


def test_cut_off_file_is_refused(tmp_path):
    data = json.dumps([{"a": i} for i in range(1000)]).encode()
    with pytest.raises(SourceError) as info:
        read(write(tmp_path, "x.json", data[: len(data) // 2]))
    assert message(info).startswith(" is not valid JSON (at byte ")


def test_malformed_line_is_named(tmp_path):
    with pytest.raises(SourceError) as info:
        read(write(tmp_path, "x.json", b'{"a": 1}\n{"a": 2}\n{"a": oops}\n'))
    assert message(info) == " is not valid JSON (at byte 7 in line 3: unexpected character)"


def test_latin1_content_is_refused(tmp_path):
    with pytest.raises(SourceError) as info:
        read(write(tmp_path, "x.json", '[{"a": "café"}]'.encode("latin-1")))
    assert "invalid UTF-8" in message(info)


def test_big_files_raise_type_drift_on_a_late_key(tmp_path, monkeypatch):
    monkeypatch.setattr(json_source, "EXACT_TYPES_UP_TO", 0)  # every file counts as big
    data = b'{"a": 1}\n' * 30_000 + b'{"a": 2, "late": "x"}\n'
    path = write(tmp_path, "x.ndjson", data)
    with pytest.raises(TypeDriftError) as info:
        read(path)
    assert message(info, "x.ndjson") == (
        ', line 30001: Object {"a":2,"late":"x"} has unknown key "late" '
        "(the columns were sniffed from the first objects)"
    )
    exact = read(path, exact_types=True)
    assert exact.column("late").to_pylist()[-2:] == [None, "x"]


def test_small_files_see_every_key(tmp_path):
    data = b'{"a": 1}\n' * 30_000 + b'{"a": 2, "late": "x"}\n'
    table = read(write(tmp_path, "x.ndjson", data))
    assert table.num_rows == 30_001
    assert table.column("late").to_pylist()[-1] == "x"
