"""Distinct-value estimates for the planner: exact for small domains, scaled for wide ones."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from shoal.products.stats import SAMPLE_ROWS, ValueRange, estimate_distinct, value_ranges


def _dataset(table: pa.Table, parts: int = 4) -> pads.Dataset:
    size = max(1, table.num_rows // parts)
    return pads.dataset([table.slice(i, size) for i in range(0, table.num_rows, size)])


def test_small_domains_are_counted_and_wide_ones_scaled():
    rows = 3 * SAMPLE_ROWS
    table = pa.table(
        {
            "Store": pa.array([f"s{i % 8}" for i in range(rows)]),
            "order_id": pa.array(range(rows), pa.int64()),
            "coupon": pa.array([None if i % 3 else "A" for i in range(rows)]),
        }
    )
    estimates = estimate_distinct(_dataset(table), rows)
    assert estimates["store"] == 8  # lower-case names, every value seen in the sample
    assert estimates["order_id"] == rows  # unique in the sample: scaled to all rows
    assert estimates["coupon"] == 2  # NULL is a group of its own


def test_a_product_smaller_than_the_sample_is_counted_exactly():
    table = pa.table({"k": [1, 2, 2, 3, None], "v": [1.0, 2.0, 3.0, 4.0, 5.0]})
    assert estimate_distinct(_dataset(table, 2), 5) == {"k": 4, "v": 5}


def test_empty_products_and_nested_columns():
    empty = pa.table({"k": pa.array([], pa.int64())})
    assert estimate_distinct(_dataset(empty), 0) == {}
    nested = pa.table({"tags": pa.array([[1], [1], [2]], pa.list_(pa.int64()))})
    # No hash kernel for lists: counted as all different, which only ever costs speed.
    assert estimate_distinct(_dataset(nested, 1), 3) == {"tags": 3}


def _parquet_dataset(tmp_path, tables: list[pa.Table], **options) -> pads.Dataset:
    paths = []
    for index, table in enumerate(tables):
        path = tmp_path / f"part-{index}.parquet"
        pq.write_table(table, path, row_group_size=2, **options)
        paths.append(str(path))
    return pads.dataset(paths, format="parquet")


def test_value_ranges_cover_every_file_and_row_group(tmp_path):
    first = pa.table({"Qty": pa.array([3, 9, 4], pa.int64()), "amount": [1.5, 2.5, 0.5]})
    second = pa.table({"Qty": pa.array([1, 7], pa.int64()), "amount": [9.0, 3.0]})
    ranges = value_ranges(_parquet_dataset(tmp_path, [first, second]))
    assert ranges["qty"] == ValueRange(1, 9, nulls=False, floating=False)
    assert ranges["amount"] == ValueRange(0.5, 9.0, nulls=False, floating=True)


def test_value_ranges_say_when_a_row_is_null(tmp_path):
    table = pa.table({"k": pa.array([1, 2, None, 4], pa.int32()), "v": [None, None, 1.0, 2.0]})
    ranges = value_ranges(_parquet_dataset(tmp_path, [table]))
    assert ranges["k"].nulls and ranges["k"].low == 1 and ranges["k"].high == 4
    # The first row group is all NULL: no min/max there, so no range at all.
    assert "v" not in ranges


def test_value_ranges_leave_out_what_statistics_do_not_cover(tmp_path):
    table = pa.table({"k": pa.array([1, 2], pa.int64()), "s": ["a", "b"]})
    bare, plain, big = (tmp_path / name for name in ("bare", "plain", "big"))
    for folder in (bare, plain, big):
        folder.mkdir()
    assert value_ranges(_parquet_dataset(bare, [table], write_statistics=False)) == {}
    assert set(value_ranges(_parquet_dataset(plain, [table]))) == {"k"}  # no strings
    large = pa.table({"k": pa.array([2**62 + 1, 2**62 + 3], pa.int64())})
    assert value_ranges(_parquet_dataset(big, [large]))["k"].low == 2**62 + 1  # exact


def test_value_ranges_of_a_file_without_a_column_leave_it_out(tmp_path):
    old = pa.table({"k": pa.array([1, 2], pa.int64())})
    new = pa.table({"k": pa.array([3], pa.int64()), "v": pa.array([5], pa.int64())})
    paths = []
    for index, table in enumerate((old, new)):
        path = tmp_path / f"f{index}.parquet"
        pq.write_table(table, path)
        paths.append(str(path))
    dataset = pads.dataset(paths, format="parquet", schema=new.schema)
    assert set(value_ranges(dataset)) == {"k"}
