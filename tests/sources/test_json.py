"""JSON arrays and newline-delimited JSON."""

from __future__ import annotations

import json

import pytest

from shoal.errors import SourceError
from tests.sources.util import read

ROWS = [{"id": 1, "name": "Zoë", "tags": ["a"]}, {"id": 2, "name": None, "tags": []}]


def test_array_of_objects(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(json.dumps(ROWS), encoding="utf-8")
    table = read(path)
    assert table.column("id").to_pylist() == [1, 2]
    assert table.column("name").to_pylist() == ["Zoë", None]
    assert table.column("tags").to_pylist() == [["a"], []]


@pytest.mark.parametrize("suffix", [".ndjson", ".jsonl", ".json"])
def test_one_object_per_line(tmp_path, suffix):
    path = tmp_path / f"l{suffix}"
    path.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n", encoding="utf-8")
    assert read(path).column("id").to_pylist() == [1, 2]


@pytest.mark.parametrize(
    "content",
    ["", "   \n", "42", '"text"', '{"a": 1', '[{"a": 1}, {"a": ', "\x00\x01\x02garbage"],
)
def test_bad_json_is_refused(tmp_path, content):
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(SourceError):
        read(path)
