"""Parquet files: streamed in batches; broken files get clear errors."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shoal.errors import SourceError
from shoal.sources import BATCH_ROWS, SourceOptions, open_source
from tests.sources.util import read


def test_reads_every_row_and_type(tmp_path):
    table = pa.table(
        {
            "id": pa.array([1, 2, 3], pa.int32()),
            "price": pa.array([1.5, None, 3.25]),
            "when": pa.array([0, 1, 2], pa.timestamp("ms")),
        }
    )
    path = tmp_path / "t.parquet"
    pq.write_table(table, path)
    assert read(path).equals(table)


def test_streams_in_batches(tmp_path):
    n = BATCH_ROWS * 3 + 5
    path = tmp_path / "big.parquet"
    pq.write_table(pa.table({"i": pa.array(range(n))}), path, row_group_size=BATCH_ROWS)
    with open_source(str(path), SourceOptions()) as reader:
        sizes = [batch.num_rows for batch in reader]
    assert sum(sizes) == n
    assert max(sizes) <= BATCH_ROWS


@pytest.mark.parametrize("content", [b"", b"PAR1", b"not parquet at all" * 100])
def test_garbage_is_refused(tmp_path, content):
    path = tmp_path / "bad.parquet"
    path.write_bytes(content)
    with pytest.raises(SourceError):
        read(path)


def test_truncated_file_is_refused(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"i": list(range(10_000))}), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceError):
        read(path)
