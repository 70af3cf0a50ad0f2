"""Hot columns: the columns a statement names are decoded once per version and kept."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.dataset as pads
import pytest

from shoal.products.columns import ColumnCache, columns_named

SCHEMA = pa.schema(
    [
        ("order_id", pa.int64()),
        ("date", pa.date32()),
        ("Amount", pa.float64()),
        ("sku", pa.string()),
    ]
)


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ('SELECT sum("Amount") FROM "berlin"."orders"', ["Amount"]),
        ("SELECT count(*) FROM orders", []),
        ("SELECT date, sku FROM orders WHERE order_id > 3", ["order_id", "date", "sku"]),
        ("SELECT amount FROM orders", ["Amount"]),  # names match case-insensitively
        ("SELECT * FROM orders", None),
        ("SELECT o.* FROM orders o", None),
        ("SELECT COLUMNS('a.*') FROM orders", None),
        ("SELECT 'unterminated FROM orders", None),
    ],
)
def test_the_columns_a_statement_names(sql, expected):
    assert columns_named(sql, SCHEMA) == expected


class CountingDataset:
    """A dataset that counts how many times columns are decoded."""

    def __init__(self, table: pa.Table) -> None:
        self.inner = pads.dataset(table)
        self.schema = self.inner.schema
        self.decoded: list[list[str]] = []

    def to_table(self, columns):
        self.decoded.append(list(columns))
        return self.inner.to_table(columns=columns)


def _table(rows: int = 1000) -> pa.Table:
    return pa.table(
        {
            "order_id": pa.array(range(rows), pa.int64()),
            "date": pa.array([None] * rows, pa.date32()),
            "Amount": pa.array([1.5] * rows),
            "sku": pa.array(["SKU-1"] * rows),
        }
    )


def test_columns_are_decoded_once_per_version():
    cache = ColumnCache(10 * 1024 * 1024)
    dataset = CountingDataset(_table())
    first = cache.table("orders", 3, dataset, ["Amount"])
    again = cache.table("orders", 3, dataset, ["Amount", "sku"])
    assert first.column_names == ["Amount"] and again.column_names == ["Amount", "sku"]
    assert dataset.decoded == [["Amount"], ["sku"]]
    assert again.column("Amount").to_pylist() == [1.5] * 1000
    cache.table("orders", 4, dataset, ["Amount"])  # a new version is decoded anew
    assert dataset.decoded[-1] == ["Amount"]
    assert cache.table("orders", 3, dataset, None).column_names == SCHEMA.names


def test_what_does_not_fit_is_read_from_the_dataset_and_old_columns_make_room():
    table = _table()
    one_column = table.column("order_id").nbytes
    cache = ColumnCache(one_column + one_column // 2)
    dataset = CountingDataset(table)
    assert cache.table("orders", 1, dataset, ["order_id", "Amount"]) is None
    assert cache.table("orders", 1, dataset, ["order_id"]) is not None
    assert cache.table("orders", 1, dataset, ["Amount"]) is not None  # evicts order_id
    cache.table("orders", 1, dataset, ["order_id"])
    assert dataset.decoded.count(["order_id"]) == 2
    assert ColumnCache(0).table("orders", 1, dataset, ["Amount"]) is None
    assert cache.table("orders", 1, dataset, []) is None
