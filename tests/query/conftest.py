"""A small mesh of real node homes and the same data in one DuckDB, for differential tests.

Fragments run in process (`Node.sql` on the holder's home) instead of over Arrow Flight; the
multi-process tests cover the wire. Everything else is Shoal's real planner, executor and
locked-down engine.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shoal.engine import quote_identifier
from shoal.node import Node
from shoal.query import NODE_COLUMN, execute_plan, plan_query

NAMES = ["Anna", "Jürgen", "Zoë", "Łukasz", "O'Brien", "李雷", "Chloé", None]
SKUS = [f"SKU-{i:03d}" for i in range(1, 16)]


def _orders(seed: int, rows: int, first_id: int, with_note: bool, with_coupon: bool) -> pa.Table:
    rng = random.Random(seed)
    start = dt.datetime(2026, 1, 1)
    data = {
        "order_id": pa.array(range(first_id, first_id + rows), pa.int64()),
        "customer_id": pa.array([rng.randint(1, 30) for _ in range(rows)], pa.int64()),
        "sku": pa.array([rng.choice(SKUS) for _ in range(rows)]),
        "amount": pa.array(
            [None if rng.random() < 0.05 else round(rng.uniform(1, 80), 2) for _ in range(rows)],
            pa.float64(),
        ),
        "qty": pa.array([rng.randint(1, 5) for _ in range(rows)], pa.int32()),
        "ordered_at": pa.array(
            [start + dt.timedelta(minutes=rng.randint(0, 60 * 24 * 120)) for _ in range(rows)],
            pa.timestamp("us"),
        ),
    }
    if with_note:
        data["note"] = pa.array([rng.choice(NAMES) for _ in range(rows)])
    if with_coupon:
        data["coupon"] = pa.array([rng.choice([None, "AUTUMN", "WELCOME"]) for _ in range(rows)])
    return pa.table(data)


def _customers() -> pa.Table:
    rng = random.Random(3)
    return pa.table(
        {
            "customer_id": pa.array(range(1, 26), pa.int64()),
            "name": pa.array([rng.choice(NAMES[:-1]) + f" {i}" for i in range(1, 26)]),
            "city": pa.array([rng.choice(["Berlin", "München", "Köln", None]) for _ in range(25)]),
            "vip": pa.array([rng.random() < 0.3 for _ in range(25)]),
        }
    )


def _catalogue() -> pa.Table:
    categories = ["coffee", "tea", "pastry", "beans", "merch"]
    return pa.table(
        {
            "sku": pa.array([*SKUS[:12], "SKU-099"]),
            "title": pa.array([f"Produkt {s[-3:]} é" for s in SKUS[:12]] + ["Ghost"]),
            "category": pa.array([categories[i % 5] for i in range(13)]),
            "price": pa.array([round(2.5 + i * 1.25, 2) for i in range(13)], pa.float64()),
        }
    )


# owner -> product -> table
DATA = {
    "berlin": {
        "orders": _orders(1, 300, 1, with_note=True, with_coupon=False),
        "customers": _customers(),
    },
    "munich": {"orders": _orders(2, 200, 10_000, with_note=False, with_coupon=True)},
    "hamburg": {"orders": _orders(3, 0, 20_000, with_note=True, with_coupon=False)},
    "hq": {"catalogue": _catalogue()},
}


@dataclass
class Mesh:
    nodes: dict[str, Node]
    reference: duckdb.DuckDBPyConnection

    def plan(self, sql: str):
        tables = [t for node in self.nodes.values() for t in node.mesh_tables()]
        return plan_query(sql, tables)

    def ask(self, sql: str) -> pa.Table:
        return execute_plan(self.plan(sql), lambda f: self.run(f).to_reader()).read_all()

    def run(self, fragment) -> pa.Table:
        """One fragment's result, served by its first holder."""
        return self.run_sql(fragment, fragment.sql)

    def run_sql(self, fragment, sql: str) -> pa.Table:
        """`sql` run as if it were `fragment` (same node, products, versions and inputs)."""
        # A broadcast join's small sides are fetched by the serving node itself.
        inputs = {shipped.id: self.run(shipped) for shipped in fragment.inputs}
        node = self.nodes[fragment.holders[0]]
        return node.serve_fragment(
            fragment.owner, fragment.product, sql, fragment.version, fragment.also, inputs
        ).read_all()

    def expect(self, sql: str) -> pa.Table:
        return self.reference.sql(sql).to_arrow_table()


def _reference(tables: dict[str, dict[str, pa.Table]]) -> duckdb.DuckDBPyConnection:
    """One DuckDB with every product as <node>.<product>, and each plain name as the union
    by column name (columns in order of first appearance, owners sorted, `_node` last)."""
    con = duckdb.connect()
    by_product: dict[str, list[tuple[str, pa.Table]]] = {}
    for owner, products in sorted(tables.items()):
        con.execute(f"CREATE SCHEMA {quote_identifier(owner)}")
        for product, table in products.items():
            con.register("incoming", table)
            con.execute(
                f"CREATE TABLE {quote_identifier(owner)}.{quote_identifier(product)} AS "
                "SELECT * FROM incoming"
            )
            con.unregister("incoming")
            by_product.setdefault(product, []).append((owner, table))
    for product, owners in by_product.items():
        columns: dict[str, pa.DataType] = {}
        for _, table in owners:
            for field in table.schema:
                columns.setdefault(field.name, field.type)
        parts = []
        for owner, table in owners:
            have = set(table.column_names)
            select = [
                quote_identifier(c) if c in have else f"NULL AS {quote_identifier(c)}"
                for c in columns
            ]
            select.append(f"'{owner}' AS {NODE_COLUMN}")
            source = f"{quote_identifier(owner)}.{quote_identifier(product)}"
            parts.append(f"SELECT {', '.join(select)} FROM {source}")
        con.execute(f"CREATE VIEW main.{quote_identifier(product)} AS {' UNION ALL '.join(parts)}")
    return con


@pytest.fixture(scope="session")
def mesh(tmp_path_factory) -> Mesh:
    root: Path = tmp_path_factory.mktemp("query-mesh")
    nodes = {}
    for owner, products in DATA.items():
        node = Node.init(root / owner, owner, "eu-de")
        for product, table in products.items():
            path = root / f"{owner}-{product}.parquet"
            pq.write_table(table, path)
            node.publish(product, str(path))
        nodes[owner] = node
    # The reference holds what the nodes hold, read back from their tables, so types are
    # exactly as published.
    published = {
        owner: {product: node.products.dataset(product).to_table() for product in products}
        for (owner, products), node in zip(DATA.items(), nodes.values(), strict=True)
    }
    return Mesh(nodes, _reference(published))
