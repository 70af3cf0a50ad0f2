"""Plans kept for statements asked again: the same text over an equal catalog reuses its
plan; anything the planner reads that changed is a new plan."""

from __future__ import annotations

import dataclasses

import pyarrow as pa
import pytest

from shoal.errors import ShoalError
from shoal.node import Node
from shoal.query import plan_query
from shoal.query.plan import TableRef
from shoal.query.plan_cache import PlanCache, catalog_key

SCHEMA = pa.schema([("id", pa.int64()), ("amount", pa.float64())])
TABLES = [
    TableRef("berlin", "orders", SCHEMA, ("berlin", "paris"), 3, 1000),
    TableRef("paris", "orders", SCHEMA, ("paris",), 5, 2000),
]
SQL = "SELECT sum(amount) AS s FROM orders WHERE id > 10"


def test_the_same_statement_over_the_same_catalog_is_planned_once():
    cache = PlanCache()
    first = cache.plan(SQL, TABLES, plan_query)
    again = cache.plan(SQL, [dataclasses.replace(t) for t in TABLES], plan_query)
    assert again is first and (cache.hits, cache.misses) == (1, 1)
    assert cache.plan(SQL + " ", TABLES, plan_query) is not first  # other text, other plan


@pytest.mark.parametrize(
    "change",
    [
        {"version": 4},
        {"holders": ("paris", "berlin")},  # a holder went down or got slower
        {"rows": 5},
        {"distinct": {"id": 7}},
        {"bounds": {"id": (1, 9)}},
        {"fallbacks": (("rome", 2),)},
        {"schema": SCHEMA.append(pa.field("note", pa.string()))},
    ],
)
def test_anything_the_planner_reads_is_part_of_the_key(change):
    changed = [dataclasses.replace(TABLES[0], **change), TABLES[1]]
    assert catalog_key(changed) != catalog_key(TABLES)
    cache = PlanCache()
    cache.plan(SQL, TABLES, plan_query)
    cache.plan(SQL, changed, plan_query)
    assert cache.misses == 2


def test_a_statement_that_fails_to_plan_is_not_kept_and_the_cache_is_bounded():
    cache = PlanCache(max_plans=3)
    for _ in range(2):
        with pytest.raises(ShoalError):
            cache.plan("SELECT nope FROM orders", TABLES, plan_query)
    assert len(cache) == 0 and cache.misses == 2
    for n in range(5):
        cache.plan(f"SELECT count(*) + {n} AS n FROM orders", TABLES, plan_query)
    assert len(cache) == 3
    cache.plan("SELECT count(*) + 4 AS n FROM orders", TABLES, plan_query)  # kept: newest
    cache.plan("SELECT count(*) + 0 AS n FROM orders", TABLES, plan_query)  # evicted first
    assert (cache.hits, cache.misses) == (1, 8)


def test_a_node_replans_after_a_publish(tmp_path, write_parquet):
    node = Node.init(tmp_path / "berlin", "berlin")
    node.publish("orders", str(write_parquet({"id": [1, 2, 3], "amount": [1.0, 2.0, 3.0]})))
    plan = node.plan(SQL)
    assert node.plan(SQL) is plan
    node.publish("orders", str(write_parquet({"id": [40], "amount": [4.0]})))
    newer = node.plan(SQL)
    assert newer is not plan
    assert [f.version for f in newer.fragments] == [plan.fragments[0].version + 1]
    assert node.query(SQL, cached=False).read_all().column("s").to_pylist() == [4.0]
