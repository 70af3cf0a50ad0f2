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


def test_zone_maps_leave_out_blocks_a_filter_rules_out():
    from shoal.products.columns import BLOCK_ROWS
    from shoal.query.bounds import scan_filter

    rows = 3 * BLOCK_ROWS + 10
    ids = list(range(rows))
    table = pa.table(
        {
            "order_id": pa.array(ids, pa.int64()),
            # the second block is all NULL: it has no bounds, so it is never ruled out
            "store": pa.array(
                [None if BLOCK_ROWS <= i < 2 * BLOCK_ROWS else i % 3 for i in ids], pa.int32()
            ),
        }
    )
    cache = ColumnCache(100 * 1024 * 1024)
    dataset = CountingDataset(table)
    name, keep = scan_filter(f'SELECT * FROM "b"."orders" WHERE order_id = {BLOCK_ROWS + 5}')
    assert name == "orders"
    hit = cache.table("orders", 1, dataset, ["order_id", "store"], keep)
    assert hit.num_rows == BLOCK_ROWS and hit.column("order_id")[5].as_py() == BLOCK_ROWS + 5
    _, none = scan_filter("SELECT * FROM orders WHERE order_id < 0")
    assert cache.table("orders", 1, dataset, ["order_id"], none).num_rows == 0
    _, last = scan_filter(f"SELECT * FROM orders WHERE order_id >= {3 * BLOCK_ROWS}")
    assert cache.table("orders", 1, dataset, ["order_id"], last).num_rows == 10
    _, stores = scan_filter("SELECT * FROM orders WHERE store = 7")
    assert cache.table("orders", 1, dataset, ["store"], stores).num_rows == BLOCK_ROWS
    _, anything = scan_filter("SELECT * FROM orders WHERE order_id = 5 OR store IS NULL")
    assert cache.table("orders", 1, dataset, ["order_id", "store"], anything).num_rows == rows


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM orders",
        "SELECT * FROM a JOIN b USING (k) WHERE k = 1",
        "SELECT * FROM (SELECT * FROM orders) WHERE order_id = 1",
        "WITH x AS (SELECT 1) SELECT * FROM orders WHERE order_id = 1",
        "SELECT * FROM orders WHERE",
    ],
)
def test_only_plain_filtered_scans_of_one_table_are_pruned(sql):
    from shoal.query.bounds import scan_filter

    assert scan_filter(sql) is None


def test_a_node_answers_the_same_with_blocks_left_out(tmp_path, write_parquet):
    import duckdb

    from shoal.node import Node

    rows = 200_000
    data = {
        "order_id": list(range(rows)),
        "customer_id": [(i * 7919) % 5000 for i in range(rows)],
        "amount": [float(i % 100) for i in range(rows)],
    }
    node = Node.init(tmp_path / "berlin", "berlin")
    node.keep_columns = True  # as a server does
    node.publish("orders", str(write_parquet(data)))
    reference = duckdb.connect()
    reference.register("orders", pa.table(data))
    for where in (
        "order_id = 131072",
        "order_id BETWEEN 65530 AND 65540",
        "order_id > 199990 OR order_id < 3",
        "order_id IN (5, 150000) AND amount > 10",
        "customer_id = 17",
        "order_id < -1",
    ):
        sql = f"SELECT order_id, amount FROM berlin.orders WHERE {where} ORDER BY order_id"
        for _ in range(2):  # cold (decoded from Parquet), then from memory with zone maps
            got = node.sql(sql).read_all().to_pylist()
            plain = sql.replace("berlin.orders", "orders")
            assert got == reference.sql(plain).to_arrow_table().to_pylist(), where
    assert len(node.column_cache._columns) > 0
    # A one-shot process (the CLI) reads Parquet and keeps nothing.
    once = Node.open(node.home.root)
    assert (
        once.sql("SELECT count(*) AS n FROM orders WHERE order_id < 10").read_all()[0][0].as_py()
        == 10
    )
    assert len(once.column_cache._columns) == 0
