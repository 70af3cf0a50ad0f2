"""The demo's guided tour: cross-node questions, and their answers computed in one place.

Each question is written in Shoal's names: `berlin.orders` is one store's product and a plain
`orders` is every store's, unioned, with `_node` naming the store. `expected_answers` asks
the same SQL of one DuckDB holding every generated file (each node's products in a schema
named after the node, and `orders` as the union with `_node`), so `shoal demo --check`
proves the mesh's answers equal the centralized ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from shoal.engine import quote_identifier, trusted_connection
from shoal.results import first_difference

__all__ = ["TOUR", "Question", "check_answers", "expected_answers"]


@dataclass(frozen=True)
class Question:
    """One question of the tour, in Shoal's SQL names; `ordered` when its ORDER BY fixes
    the order of every row (ties broken), so answers must match row by row."""

    title: str
    sql: str
    ordered: bool
    why: str


TOUR = (
    Question(
        "Revenue by store",
        "SELECT _node AS store, count(*) AS orders, sum(amount) AS revenue "
        "FROM orders GROUP BY _node ORDER BY store",
        True,
        "One statement over two stores' orders: each store reads its own rows, the "
        "coordinator adds them up.",
    ),
    Question(
        "Best sellers across the chain",
        "SELECT c.sku, c.name, sum(o.quantity) AS units, sum(o.amount) AS revenue "
        "FROM orders o JOIN hq.catalogue c ON o.sku = c.sku "
        "GROUP BY c.sku, c.name ORDER BY units DESC, c.sku LIMIT 5",
        True,
        "Orders from both stores joined with the catalogue that hq owns.",
    ),
    Question(
        "Category share at each store",
        "SELECT o._node AS store, c.category, sum(o.amount) AS revenue, "
        "round(100 * sum(o.amount) / sum(sum(o.amount)) OVER (PARTITION BY o._node), 1) "
        "AS share_pct "
        "FROM orders o JOIN hq.catalogue c USING (sku) "
        "GROUP BY o._node, c.category ORDER BY store, revenue DESC, c.category",
        True,
        "A window function over a cross-node join.",
    ),
    Question(
        "Campaign uplift",
        "WITH sold AS ("
        " SELECT _node AS store, sku, CAST(ordered_at AS DATE) AS day, sum(quantity) AS units"
        " FROM orders GROUP BY ALL), "
        "trading AS (SELECT DISTINCT store, day FROM sold), "
        "per_day AS ("
        " SELECT k.campaign_id, k.name, k.store, k.sku,"
        " t.day BETWEEN k.starts AND k.ends AS running, coalesce(s.units, 0) AS units"
        " FROM marketing.campaigns k JOIN trading t ON t.store = k.store"
        " LEFT JOIN sold s ON s.store = t.store AND s.day = t.day AND s.sku = k.sku) "
        "SELECT campaign_id, name, store, sku, "
        "round(avg(units) FILTER (WHERE running), 1) AS daily_units_during, "
        "round(avg(units) FILTER (WHERE NOT running), 1) AS daily_units_outside, "
        "round(avg(units) FILTER (WHERE running) / avg(units) FILTER (WHERE NOT running), 1) "
        "AS uplift "
        "FROM per_day GROUP BY ALL ORDER BY campaign_id",
        True,
        "Marketing's campaigns joined with the stores' orders: units per trading day of the "
        "campaign's SKU at its store, during the campaign and on other days (days without a "
        "sale count as zero).",
    ),
    Question(
        "One customer's big orders",
        "SELECT _node AS store, order_id, ordered_at, sku, amount FROM orders "
        "WHERE customer_id = 42 AND amount >= 10 ORDER BY ordered_at, order_id",
        True,
        "The filter runs at each store, so only matching rows cross the network (see the plan).",
    ),
)


def expected_answers(files: dict[str, dict[str, Path]]) -> dict[str, pa.Table]:
    """Every question answered by one DuckDB over all the generated files."""
    with trusted_connection() as con:
        owners: dict[str, list[str]] = {}
        for node, products in files.items():
            con.execute(f"CREATE SCHEMA {quote_identifier(node)}")
            for product, path in products.items():
                source = str(path).replace("'", "''")
                con.execute(
                    f"CREATE VIEW {quote_identifier(node)}.{quote_identifier(product)} AS "
                    f"SELECT * FROM read_parquet('{source}')"
                )
                owners.setdefault(product, []).append(node)
        for product, nodes in owners.items():
            union = " UNION ALL BY NAME ".join(
                f"SELECT *, '{node}' AS _node FROM "
                f"{quote_identifier(node)}.{quote_identifier(product)}"
                for node in sorted(nodes)
            )
            con.execute(f"CREATE VIEW main.{quote_identifier(product)} AS {union}")
        return {q.title: con.sql(q.sql).to_arrow_table() for q in TOUR}


def check_answers(expected: dict[str, pa.Table], actual: dict[str, pa.Table]) -> list[str]:
    """One line per question: `<title>: ok`, or what differs."""
    lines = []
    for question in TOUR:
        got = actual.get(question.title)
        if got is None:
            lines.append(f"{question.title}: no answer")
            continue
        want = expected.get(question.title)
        if want is None:
            lines.append(f"{question.title}: no expected answer")
            continue
        problem = first_difference(want, got, ordered=question.ordered)
        lines.append(f"{question.title}: {problem or 'ok'}")
    return lines
