"""Distinct-value estimates for the planner: exact for small domains, scaled for wide ones."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.dataset as pads

from shoal.products.stats import SAMPLE_ROWS, estimate_distinct


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
