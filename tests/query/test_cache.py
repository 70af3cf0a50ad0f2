"""The exact fragment cache: same fragment over the same version is answered from memory;
a new version misses; plans read the versions they saw."""

from __future__ import annotations

import pyarrow as pa
import pytest

from shoal.node import Node
from shoal.query import Fragment
from shoal.query.cache import FragmentCache, fragment_key


def _fragment(version: int | None, sql: str = "SELECT 1") -> Fragment:
    return Fragment("f0", "berlin", "orders", ("berlin",), sql, (), (), version)


def test_keys_need_a_version_and_name_the_caller():
    assert fragment_key(_fragment(None), None) is None
    assert fragment_key(_fragment(3), "anna") != fragment_key(_fragment(3), "ben")
    assert fragment_key(_fragment(3), None) != fragment_key(_fragment(4), None)
    assert fragment_key(_fragment(3, "SELECT 2"), None) != fragment_key(_fragment(3), None)


def test_lru_is_bounded_in_bytes():
    table = pa.table({"x": pa.array(range(1000), pa.int64())})  # 8000 bytes
    cache = FragmentCache(max_bytes=40_000)
    keys = [fragment_key(_fragment(v), None) for v in range(10)]
    for key in keys:
        cache.put(key, table)
    assert cache.size_bytes <= 40_000 and len(cache) == 5
    assert cache.get(keys[0]) is None  # evicted first
    assert cache.get(keys[-1]) is not None
    assert (cache.hits, cache.misses) == (1, 1)
    # A table bigger than a quarter of the cache is not kept; a zero-sized cache keeps none.
    cache.put(fragment_key(_fragment(99), None), pa.table({"x": list(range(2000))}))
    assert cache.get(fragment_key(_fragment(99), None)) is None
    off = FragmentCache(0)
    off.put(keys[0], table)
    assert len(off) == 0


@pytest.fixture
def node(tmp_path, write_parquet) -> Node:
    node = Node.init(tmp_path / "berlin", "berlin")
    node.publish("orders", str(write_parquet({"id": [1, 2, 3], "amount": [1.0, 2.0, 3.0]})))
    return node


def test_a_repeated_query_is_answered_from_the_cache(node, write_parquet):
    sql = "SELECT sum(amount) AS s FROM orders WHERE id > 1"
    first = node.query(sql).read_all()
    hits = node.fragment_cache.hits
    again = node.query(sql).read_all()
    assert again.equals(first)
    assert node.fragment_cache.hits == hits + 1
    node.publish("orders", str(write_parquet({"id": [4], "amount": [10.0]})))
    misses = node.fragment_cache.misses
    newer = node.query(sql).read_all()
    # A new version changes the whole answer's key and the fragment's: both miss.
    assert node.fragment_cache.misses == misses + 2
    assert newer.column("s").to_pylist() == [15.0]


def test_a_repeated_statement_skips_planning_and_volatile_ones_are_never_kept(node):
    from shoal.query.profile import QueryProfile

    sql = "SELECT count(*) AS n FROM orders"
    node.query(sql).read_all()
    profile = QueryProfile()
    assert node.query(sql, profile).read_all().column("n").to_pylist() == [3]
    assert profile.result_cached and profile.plan is None and not profile.runs
    analyzed = node.analyze(sql)  # explain --analyze always plans and runs
    assert not analyzed.result_cached and analyzed.plan is not None
    # random() at the node (the whole statement runs there) or at the coordinator: a
    # repeat must draw again, so neither the answer nor the fragment is kept.
    for volatile in (
        "SELECT random() AS r FROM orders",
        "SELECT random() AS r, n FROM (SELECT count(*) AS n FROM orders)",
    ):
        draws = {node.query(volatile).read_all().column("r")[0].as_py() for _ in range(3)}
        assert len(draws) == 3, volatile
    # A result larger than a quarter of the cache is not kept.
    small = Node.open(node.home.root)
    small.fragment_cache.max_bytes = 64
    small.query("SELECT * FROM orders").read_all()
    assert len(small.fragment_cache) == 0


def test_a_plan_reads_the_versions_it_saw(node, write_parquet):
    plan = node.plan("SELECT count(*) AS n FROM berlin.orders")
    node.publish("orders", str(write_parquet({"id": [4], "amount": [10.0]})))
    from shoal.query import execute_plan

    stale = execute_plan(plan, node.run_fragment).read_all()
    assert stale.column("n").to_pylist() == [3]
    assert node.query("SELECT count(*) AS n FROM berlin.orders").read_all().column(
        "n"
    ).to_pylist() == [4]


def test_a_version_that_does_not_exist_is_not_found(node):
    from shoal.errors import NotFoundError

    with pytest.raises(NotFoundError, match="version 99"):
        node.serve_fragment("berlin", "orders", 'SELECT * FROM "berlin"."orders"', 99)
