"""Parquet files: streamed in batches with their own types; broken files get clear errors."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shoal.errors import SourceError
from shoal.sources import BATCH_ROWS, SourceOptions, open_source
from tests.sources.util import read


def message(excinfo) -> str:
    """The error's text after the file name, so a test never matches the tmp path."""
    return str(excinfo.value).split(".parquet", 1)[-1]


def test_reads_every_row_and_type(tmp_path):
    table = pa.table(
        {
            "id": pa.array([1, 2, 3], pa.int32()),
            "price": pa.array([1.5, None, 3.25]),
            "when": pa.array([0, 1, 2], pa.timestamp("ms")),
            "amount": pa.array(["1.10", "2.00", None]).cast(pa.decimal128(9, 2)),
            "tags": pa.array([["a"], [], None], pa.list_(pa.string())),
        }
    )
    path = tmp_path / "t.parquet"
    pq.write_table(table, path)
    assert read(path).equals(table)


def test_streams_in_bounded_batches(tmp_path):
    n = BATCH_ROWS * 3 + 5
    path = tmp_path / "big.pq"
    pq.write_table(pa.table({"i": pa.array(range(n))}), path, row_group_size=BATCH_ROWS * 2)
    with open_source(str(path), SourceOptions()) as reader:
        batches = list(reader)
    assert max(b.num_rows for b in batches) <= BATCH_ROWS
    assert [v for b in batches for v in b.column(0).to_pylist()] == list(range(n))


def test_non_utf8_and_unicode_file_names(tmp_path):
    for name in (os.fsdecode(b"caf\xe9.parquet"), "Verkäufe ü.parquet"):
        path = tmp_path / name
        with path.open("wb") as handle:  # pyarrow cannot take such a name itself
            pq.write_table(pa.table({"a": [1]}), handle)
        assert read(path).to_pydict() == {"a": [1]}


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", " is empty"),
        (b"PAR1", " is not a readable Parquet file"),
        (b"not parquet at all" * 100, " is not a readable Parquet file"),
        (bytes(range(256)) * 16, " is not a readable Parquet file"),
    ],
)
def test_garbage_is_refused(tmp_path, content, expected):
    path = tmp_path / "bad.parquet"
    path.write_bytes(content)
    with pytest.raises(SourceError) as info:
        read(path)
    assert message(info).startswith(expected)
    assert "\n" not in str(info.value)


def test_truncated_file_is_refused(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"i": list(range(10_000))}), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceError) as info:
        read(path)
    assert message(info).startswith(" is not a readable Parquet file: ")


def test_damage_in_a_later_row_group_is_refused(tmp_path):
    path = tmp_path / "d.parquet"
    table = pa.table({"s": [f"value-{i}" for i in range(20_000)]})
    pq.write_table(table, path, row_group_size=10_000, compression="snappy")
    data = bytearray(path.read_bytes())
    footer = pq.ParquetFile(path).metadata.row_group(1).column(0)
    start = footer.data_page_offset
    data[start + 20 : start + 400] = b"\xff" * 380  # scramble the second row group's page
    path.write_bytes(bytes(data))
    with open_source(str(path), SourceOptions()) as reader, pytest.raises(SourceError) as info:
        for _ in reader:
            pass
    assert message(info).startswith(" is damaged: ")
