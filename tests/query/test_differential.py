"""The same data spread over four nodes and held in one DuckDB: every query shape must give
the same rows both ways (in any order unless the query fixes one; floats to 1e-9)."""

from __future__ import annotations

import pytest

from shoal.query import execute_plan, plan_query
from shoal.results import first_difference

# (query, ordered): ordered only where the outermost ORDER BY fixes every row's place.
QUERIES: list[tuple[str, bool]] = [
    # projections and plain names
    ("SELECT * FROM berlin.orders", False),
    ("SELECT * FROM orders", False),
    ("SELECT order_id, amount FROM munich.orders", False),
    ("SELECT order_id, _node FROM orders", False),
    ("SELECT note, coupon, _node FROM orders", False),
    ("SELECT * FROM hamburg.orders", False),
    ("SELECT count(*) FROM hamburg.orders", False),
    ("SELECT * FROM catalogue", False),
    ("SELECT o.* FROM berlin.orders o", False),
    ("SELECT * EXCLUDE (note) FROM berlin.orders", False),
    ("SELECT COLUMNS('^(order|cust)') FROM orders", False),
    ('SELECT "order_id", "Amount" FROM "berlin"."orders"', False),
    ("SELECT order_id AS id, amount * 2 AS double_amount FROM berlin.orders", False),
    ("SELECT 1 AS one", False),
    ("SELECT 42 AS answer, 'ä' AS letter FROM range(3)", False),
    # filters of every kind
    ("SELECT * FROM orders WHERE amount > 40", False),
    ("SELECT * FROM orders WHERE amount >= 40 AND qty <= 2", False),
    ("SELECT order_id FROM orders WHERE sku IN ('SKU-001', 'SKU-007')", False),
    ("SELECT order_id FROM orders WHERE sku NOT IN ('SKU-001', 'SKU-007')", False),
    ("SELECT order_id FROM orders WHERE amount BETWEEN 10 AND 20", False),
    ("SELECT order_id FROM orders WHERE amount NOT BETWEEN 10 AND 70", False),
    ("SELECT order_id FROM orders WHERE sku LIKE 'SKU-01%'", False),
    ("SELECT order_id FROM orders WHERE note ILIKE 'zo%'", False),
    ("SELECT order_id FROM orders WHERE note IS NULL", False),
    ("SELECT order_id FROM orders WHERE amount IS NULL", False),
    ("SELECT order_id FROM orders WHERE amount IS NOT NULL AND coupon IS NOT NULL", False),
    ("SELECT order_id FROM orders WHERE ordered_at >= TIMESTAMP '2026-03-01'", False),
    ("SELECT order_id FROM orders WHERE ordered_at < DATE '2026-02-01' + INTERVAL 3 DAY", False),
    ("SELECT order_id FROM orders WHERE amount > 30 OR qty = 5", False),
    ("SELECT order_id FROM orders WHERE NOT (amount > 30)", False),
    ("SELECT order_id FROM orders WHERE lower(note) = 'zoë'", False),
    ("SELECT order_id FROM orders WHERE coalesce(coupon, 'none') = 'none'", False),
    ("SELECT order_id FROM orders WHERE amount * qty > 150", False),
    ("SELECT order_id FROM orders WHERE _node = 'munich' AND amount < 5", False),
    ("SELECT order_id FROM orders WHERE _node IN ('berlin', 'hamburg')", False),
    ("SELECT order_id FROM orders WHERE amount > random() * 1000 - 2000", False),
    ("SELECT order_id FROM berlin.orders WHERE note = 'O''Brien'", False),
    ("SELECT order_id FROM berlin.orders WHERE note = '李雷'", False),
    ("SELECT order_id FROM orders WHERE amount > (SELECT avg(amount) FROM orders)", False),
    ("SELECT order_id FROM orders WHERE sku IN (SELECT sku FROM hq.catalogue)", False),
    ("SELECT order_id FROM orders WHERE sku NOT IN (SELECT sku FROM catalogue)", False),
    ("SELECT * FROM orders WHERE false", False),
    ("SELECT count(*) AS n FROM orders WHERE coupon = 'AUTUMN'", False),
    ("SELECT order_id, amount AS a FROM berlin.orders WHERE a > 50", False),
    ("SELECT order_id FROM orders WHERE starts_with(sku, 'SKU-00')", False),
    ("SELECT order_id FROM orders WHERE length(note) > 4", False),
    ("SELECT order_id FROM orders WHERE abs(amount - 40) < 1", False),
    ("SELECT order_id FROM orders WHERE CAST(amount AS INTEGER) = 12", False),
    # aggregates, GROUP BY, HAVING
    ("SELECT count(*), sum(amount), avg(amount), min(amount), max(amount) FROM orders", False),
    ("SELECT _node, count(*) AS n, sum(amount) AS total FROM orders GROUP BY _node", False),
    ("SELECT sku, count(*) FROM orders GROUP BY sku", False),
    ("SELECT sku, _node, sum(qty) FROM orders GROUP BY ALL", False),
    ("SELECT sku, sum(qty) AS units FROM orders GROUP BY sku HAVING sum(qty) > 40", False),
    ("SELECT sku, count(*) FROM orders GROUP BY sku HAVING count(*) > 30", False),
    ("SELECT count(DISTINCT sku), count(DISTINCT customer_id) FROM orders", False),
    ("SELECT count(note), count(coupon), count(*) FROM orders", False),
    ("SELECT date_trunc('month', ordered_at) AS m, sum(amount) FROM orders GROUP BY 1", False),
    ("SELECT qty, list(order_id ORDER BY order_id) AS ids FROM munich.orders GROUP BY qty", False),
    ("SELECT string_agg(DISTINCT sku, ',' ORDER BY sku) FROM berlin.orders", False),
    ("SELECT sum(amount) FILTER (WHERE qty > 2) FROM orders", False),
    ("SELECT median(amount), quantile_cont(amount, 0.9) FROM orders", False),
    ("SELECT coupon, count(*) FROM orders GROUP BY coupon", False),
    ("SELECT count(*) FROM hamburg.orders GROUP BY sku", False),
    ("SELECT sum(amount) FROM hamburg.orders", False),
    ("SELECT _node, max(ordered_at) FROM orders GROUP BY ROLLUP (_node)", False),
    # ORDER BY, LIMIT, OFFSET, DISTINCT
    ("SELECT order_id, amount FROM orders ORDER BY order_id LIMIT 10", True),
    ("SELECT order_id FROM orders ORDER BY order_id DESC LIMIT 5 OFFSET 3", True),
    ("SELECT order_id, amount FROM orders ORDER BY amount DESC NULLS LAST, order_id LIMIT 7", True),
    ("SELECT order_id, amount FROM orders ORDER BY amount NULLS FIRST, order_id LIMIT 12", True),
    ("SELECT DISTINCT sku FROM orders ORDER BY sku", True),
    ("SELECT DISTINCT _node FROM orders ORDER BY 1", True),
    ("SELECT DISTINCT ON (sku) sku, order_id FROM orders ORDER BY sku, order_id", True),
    ("SELECT sku, count(*) AS n FROM orders GROUP BY sku ORDER BY n DESC, sku LIMIT 3", True),
    ("SELECT * FROM orders ORDER BY ordered_at, order_id LIMIT 20", True),
    ("SELECT note FROM berlin.orders ORDER BY note COLLATE nocase, order_id LIMIT 30", False),
    ("SELECT * FROM hamburg.orders ORDER BY order_id LIMIT 3", True),
    # joins across and within nodes
    (
        "SELECT o.order_id, c.name FROM berlin.orders o JOIN berlin.customers c "
        "ON o.customer_id = c.customer_id",
        False,
    ),
    (
        "SELECT o.order_id, c.name, c.city FROM munich.orders o JOIN berlin.customers c "
        "USING (customer_id)",
        False,
    ),
    (
        "SELECT o._node, k.category, sum(o.amount) FROM orders o JOIN hq.catalogue k "
        "ON o.sku = k.sku GROUP BY ALL",
        False,
    ),
    (
        "SELECT o.order_id, k.title FROM orders o LEFT JOIN catalogue k ON o.sku = k.sku",
        False,
    ),
    (
        "SELECT k.sku, count(o.order_id) FROM hq.catalogue k LEFT JOIN orders o "
        "ON o.sku = k.sku GROUP BY k.sku",
        False,
    ),
    (
        "SELECT k.sku, o.order_id FROM orders o RIGHT JOIN hq.catalogue k ON o.sku = k.sku "
        "WHERE o.amount > 70 OR o.amount IS NULL",
        False,
    ),
    (
        "SELECT k.sku, o.order_id FROM orders o RIGHT JOIN hq.catalogue k ON o.sku = k.sku "
        "WHERE o.amount IS NULL",
        False,
    ),
    (
        "SELECT k.sku, o.order_id FROM berlin.orders o FULL JOIN hq.catalogue k "
        "ON o.sku = k.sku WHERE o.qty IS NULL OR k.price IS NULL",
        False,
    ),
    (
        "SELECT k.sku, o.order_id FROM hq.catalogue k FULL JOIN munich.orders o "
        "ON o.sku = k.sku WHERE k.price > 10",
        False,
    ),
    (
        "SELECT o.order_id, k.price FROM orders o LEFT JOIN hq.catalogue k ON o.sku = k.sku "
        "WHERE k.price > 10",
        False,
    ),
    (
        "SELECT o.order_id, k.price FROM orders o LEFT JOIN hq.catalogue k ON o.sku = k.sku "
        "WHERE k.price IS NULL",
        False,
    ),
    (
        "SELECT o.order_id, k.price FROM orders o LEFT JOIN hq.catalogue k "
        "ON o.sku = k.sku AND k.price > 10 WHERE o.qty = 1",
        False,
    ),
    ("SELECT count(*) FROM berlin.customers CROSS JOIN hq.catalogue", False),
    (
        "SELECT a.order_id, b.order_id FROM berlin.orders a JOIN berlin.orders b "
        "ON a.customer_id = b.customer_id AND a.order_id < b.order_id WHERE a.amount > 70",
        False,
    ),
    (
        "SELECT b.order_id, m.order_id FROM berlin.orders b JOIN munich.orders m "
        "ON b.customer_id = m.customer_id AND b.sku = m.sku",
        False,
    ),
    ("SELECT * FROM berlin.orders NATURAL JOIN berlin.customers", False),
    (
        "SELECT c.name, count(*) FROM orders o, berlin.customers c "
        "WHERE o.customer_id = c.customer_id AND o.amount > 20 GROUP BY c.name",
        False,
    ),
    (
        "SELECT o.order_id FROM orders o JOIN berlin.customers c USING (customer_id) "
        "WHERE c.vip AND o._node = 'munich'",
        False,
    ),
    (
        "SELECT o.order_id FROM orders o SEMI JOIN hq.catalogue k "
        "ON o.sku = k.sku AND k.category = 'tea' WHERE o.qty > 1",
        False,
    ),
    ("SELECT o.order_id FROM orders o ANTI JOIN hq.catalogue k ON o.sku = k.sku", False),
    # subqueries and CTEs
    (
        "SELECT c.name FROM berlin.customers c WHERE EXISTS "
        "(SELECT 1 FROM orders o WHERE o.customer_id = c.customer_id AND o.amount > 75)",
        False,
    ),
    (
        "SELECT c.name FROM berlin.customers c WHERE NOT EXISTS "
        "(SELECT 1 FROM munich.orders o WHERE o.customer_id = c.customer_id)",
        False,
    ),
    (
        "SELECT c.name, (SELECT count(*) FROM orders o WHERE o.customer_id = c.customer_id) "
        "AS orders FROM berlin.customers c",
        False,
    ),
    (
        "SELECT * FROM (SELECT sku, sum(amount) AS total FROM orders GROUP BY sku) t "
        "WHERE total > 500",
        False,
    ),
    (
        "WITH big AS (SELECT * FROM orders WHERE amount > 60) "
        "SELECT _node, count(*) FROM big GROUP BY _node",
        False,
    ),
    ("WITH orders AS (SELECT 7 AS order_id) SELECT * FROM orders", False),
    (
        "WITH t AS (SELECT customer_id, sum(amount) AS s FROM orders GROUP BY 1) "
        "SELECT c.name, t.s FROM t JOIN berlin.customers c USING (customer_id) WHERE t.s > 100",
        False,
    ),
    (
        "WITH a AS (SELECT sku FROM berlin.orders), b AS (SELECT sku FROM munich.orders) "
        "SELECT count(*) FROM a JOIN b USING (sku)",
        False,
    ),
    (
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5) "
        "SELECT i, (SELECT count(*) FROM orders WHERE qty = i) FROM n",
        False,
    ),
    ("SELECT max(t.n) FROM (SELECT count(*) AS n FROM orders GROUP BY customer_id) t", False),
    (
        "SELECT sku FROM hq.catalogue WHERE price > (SELECT max(amount) / 10 FROM munich.orders)",
        False,
    ),
    # window functions
    (
        "SELECT order_id, _node, row_number() OVER (PARTITION BY _node ORDER BY order_id) "
        "AS rn FROM orders",
        False,
    ),
    (
        "SELECT order_id, sum(amount) OVER (ORDER BY order_id ROWS BETWEEN 2 PRECEDING "
        "AND CURRENT ROW) FROM berlin.orders",
        False,
    ),
    (
        "SELECT sku, rank() OVER (ORDER BY sum(qty) DESC) FROM orders GROUP BY sku",
        False,
    ),
    (
        "SELECT * FROM (SELECT order_id, amount, dense_rank() OVER "
        "(PARTITION BY sku ORDER BY amount DESC NULLS LAST) AS r FROM orders) WHERE r = 1",
        False,
    ),
    (
        "SELECT order_id, lag(amount) OVER (ORDER BY order_id) FROM munich.orders",
        False,
    ),
    (
        "SELECT _node, order_id FROM orders QUALIFY row_number() OVER "
        "(PARTITION BY _node ORDER BY amount DESC NULLS LAST, order_id) <= 2",
        False,
    ),
    # set operations
    ("SELECT sku FROM berlin.orders UNION SELECT sku FROM munich.orders", False),
    ("SELECT sku FROM berlin.orders UNION ALL SELECT sku FROM munich.orders", False),
    ("SELECT sku FROM berlin.orders INTERSECT SELECT sku FROM munich.orders", False),
    ("SELECT sku FROM hq.catalogue EXCEPT SELECT sku FROM orders", False),
    (
        "SELECT customer_id FROM berlin.orders WHERE amount > 50 UNION "
        "SELECT customer_id FROM munich.orders WHERE amount < 3 ORDER BY 1",
        True,
    ),
    ("SELECT * FROM berlin.orders UNION ALL BY NAME SELECT * FROM munich.orders", False),
    # NULLs, types, expressions, unicode
    ("SELECT order_id, amount + NULL, coalesce(note, '∅') FROM orders", False),
    ("SELECT note, count(*) FROM orders GROUP BY note", False),
    (
        "SELECT CASE WHEN amount > 50 THEN 'big' ELSE 'small' END AS size, count(*) "
        "FROM orders GROUP BY 1",
        False,
    ),
    ("SELECT upper(note), length(note) FROM berlin.orders WHERE note IS NOT NULL", False),
    ("SELECT strftime(ordered_at, '%Y-%m') AS m, count(*) FROM orders GROUP BY 1", False),
    ("SELECT extract(dow FROM ordered_at) AS d, avg(amount) FROM orders GROUP BY d", False),
    ("SELECT title, price FROM hq.catalogue WHERE title LIKE '%é'", False),
    ("SELECT {'id': order_id, 'n': note} AS s FROM berlin.orders LIMIT 0", False),
    ("SELECT [order_id, qty] AS l FROM munich.orders WHERE qty = 5", False),
    ("SELECT order_id // 7 AS bucket, count(*) FROM orders GROUP BY 1", False),
    ("SELECT round(sum(amount) / nullif(count(amount), 0), 4) FROM orders", False),
    ("SELECT typeof(amount), typeof(_node) FROM orders LIMIT 1", False),
    # case and quoting of names
    ("SELECT COUNT(*) FROM BERLIN.ORDERS", False),
    ('SELECT count(*) FROM "Orders"', False),
    ("SELECT Order_ID FROM Munich.Orders WHERE AMOUNT > 79", False),
    # FROM-first and other DuckDB shapes
    ("FROM berlin.customers SELECT name WHERE vip", False),
    ("FROM orders", False),
    ("SELECT * FROM orders USING SAMPLE 0 ROWS", False),
    ("SELECT sum(amount) AS total FROM orders GROUP BY GROUPING SETS ((sku), ())", False),
    ("SELECT * FROM (VALUES (1, 'a'), (2, 'b')) v(id, letter)", False),
    ("SELECT unnest([1, 2, 3]) AS x", False),
    ("SELECT order_id FROM orders WHERE order_id IN (1, 10000, 20000, 10199)", False),
]


@pytest.mark.parametrize(("sql", "ordered"), QUERIES, ids=[q[:60] for q, _ in QUERIES])
def test_same_rows_as_one_duckdb(mesh, sql, ordered):
    expected = mesh.expect(sql)
    got = mesh.ask(sql)
    problem = first_difference(expected, got, ordered=ordered)
    assert problem is None, f"{problem}\nplan:\n{mesh.plan(sql).explain()}"


def test_there_are_at_least_a_hundred_queries():
    assert len(QUERIES) >= 100


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM orders LIMIT 7",
        "SELECT order_id FROM orders WHERE amount > 20 LIMIT 11",
        "SELECT * FROM munich.orders LIMIT 0",
        "SELECT note FROM orders WHERE note IS NOT NULL LIMIT 3 OFFSET 2",
    ],
)
def test_limit_without_order_gives_that_many_matching_rows(mesh, sql):
    """Any k rows are a right answer: the count must match, and every row must qualify."""
    expected = mesh.expect(sql)
    got = mesh.ask(sql)
    assert got.num_rows == expected.num_rows
    assert got.column_names == expected.column_names
    everything = mesh.expect(sql.split(" LIMIT ")[0])
    allowed = {tuple(r.values()) for r in everything.to_pylist()}
    assert all(tuple(r.values()) in allowed for r in got.to_pylist())


AGGREGATES = [
    "SELECT count(*), count(amount), sum(amount), min(amount), max(amount), avg(amount) "
    "FROM orders",
    "SELECT _node, count(*) FROM orders GROUP BY _node",
    "SELECT _node, sku, sum(qty) AS units FROM orders GROUP BY _node, sku",
    "SELECT sku, avg(qty), min(ordered_at), max(note) FROM orders GROUP BY sku",
    "SELECT coupon, count(*) FROM orders GROUP BY coupon",
    "SELECT count(*) FROM hamburg.orders",
    "SELECT sum(amount), avg(qty) FROM hamburg.orders",
    "SELECT sku, count(*) FROM hamburg.orders GROUP BY sku",
    "SELECT qty, sum(amount * qty) AS revenue FROM orders WHERE amount > 10 GROUP BY qty",
    "SELECT sku, sum(qty) AS u FROM orders GROUP BY sku HAVING sum(qty) > 30 ORDER BY u DESC, sku",
    "SELECT sku, count(*) AS n FROM orders GROUP BY 1 ORDER BY n DESC, sku LIMIT 3",
    "SELECT customer_id, max(amount) - min(amount) AS spread FROM berlin.orders "
    "GROUP BY customer_id",
    "SELECT count(*) * 2 AS twice FROM orders WHERE sku LIKE 'SKU-00%'",
    "SELECT note, count(*) FROM orders GROUP BY note",
    "SELECT sum(qty) FROM orders WHERE _node = 'munich'",
    "SELECT avg(amount) FROM orders WHERE amount IS NULL",
    "SELECT o.sku, count(*) FROM orders o GROUP BY o.sku",
]


@pytest.mark.parametrize("sql", AGGREGATES)
def test_partial_aggregates_agree(mesh, sql):
    expected = mesh.expect(sql)
    got = mesh.ask(sql)
    ordered = "ORDER BY" in sql
    problem = first_difference(expected, got, ordered=ordered)
    assert problem is None, f"{problem}\nplan:\n{mesh.plan(sql).explain()}"
    assert got.schema.types == expected.schema.types


def test_partial_aggregation_moves_groups_not_rows(mesh):
    plan = mesh.plan("SELECT _node, sku, sum(qty) FROM orders GROUP BY _node, sku")
    assert all(f.aggregate for f in plan.fragments)
    moved = sum(
        mesh.nodes[f.holders[0]]
        .serve_fragment(f.owner, f.product, f.sql, f.version, f.also)
        .read_all()
        .num_rows
        for f in plan.fragments
    )
    distinct = "SELECT count(*) AS n FROM (SELECT DISTINCT _node, sku FROM orders)"
    groups = mesh.expect(distinct).column("n")[0].as_py()
    assert moved <= groups


def assert_agrees(mesh, sql, plan, *, ordered=False):
    """Shoal's answer equals one DuckDB's over the same data: rows, names and types."""
    expected = mesh.expect(sql)
    got = mesh.ask(sql)
    problem = first_difference(expected, got, ordered=ordered)
    assert problem is None, f"{problem}\nplan:\n{plan.explain()}"
    assert got.schema.types == expected.schema.types
    assert got.column_names == expected.column_names


# Statements whose products all live on one node: they run there whole (with ordering kept).
COLOCATED = [
    "SELECT o.order_id, c.name FROM berlin.orders o JOIN berlin.customers c "
    "USING (customer_id) ORDER BY o.order_id LIMIT 20",
    "WITH big AS (SELECT customer_id, sum(amount) AS s FROM berlin.orders GROUP BY 1) "
    "SELECT c.city, max(b.s) FROM big b JOIN berlin.customers c USING (customer_id) "
    "GROUP BY c.city ORDER BY c.city NULLS FIRST",
    "SELECT o.customer_id, c.customer_id, rank() OVER (PARTITION BY c.city ORDER BY o.order_id) "
    "FROM berlin.orders o JOIN berlin.customers c ON o.customer_id = c.customer_id "
    "ORDER BY 3, 1, o.order_id",
    "SELECT * FROM customers WHERE vip ORDER BY customer_id",
    "SELECT _node, count(*) FROM catalogue GROUP BY _node",
    "SELECT count(*), sum(amount) FROM hamburg.orders",
    "SELECT name FROM berlin.customers WHERE customer_id IN "
    "(SELECT customer_id FROM berlin.orders WHERE amount > 70) ORDER BY name",
]


@pytest.mark.parametrize("sql", COLOCATED)
def test_colocated_statements_run_whole_and_agree(mesh, sql):
    plan = mesh.plan(sql)
    (fragment,) = plan.fragments
    assert fragment.pushed.startswith("the whole statement"), plan.explain()
    assert_agrees(mesh, sql, plan, ordered="ORDER BY" in sql)


# A small product joined with a large one: each node of the large side fetches the small
# side itself and sends joined rows (or their partial aggregates, or its top-N).
BROADCAST = [
    (
        "SELECT k.category, sum(o.amount) AS s FROM orders o JOIN hq.catalogue k "
        "ON o.sku = k.sku GROUP BY k.category",
        "aggregate",
    ),
    (
        "SELECT o._node, k.category, count(*), avg(o.amount * o.qty), max(k.price) "
        "FROM orders o JOIN hq.catalogue k USING (sku) WHERE k.price > 5 AND o.qty < 5 "
        "GROUP BY ALL ORDER BY 1, 2",
        "aggregate",
    ),
    (
        "SELECT k.title, count(DISTINCT o.customer_id) FROM orders o JOIN hq.catalogue k "
        "USING (sku) GROUP BY 1 HAVING count(*) > 10",
        "aggregate",
    ),
    ("SELECT count(*) FROM orders o JOIN hq.catalogue k ON o.sku = k.sku", "aggregate"),
    (
        "SELECT o.order_id, k.title FROM orders o JOIN hq.catalogue k USING (sku) "
        "ORDER BY o.amount DESC NULLS LAST, o.order_id LIMIT 5",
        "top_n",
    ),
    (
        "SELECT sku, o.order_id, k.price FROM orders o LEFT JOIN hq.catalogue k USING (sku) "
        "WHERE o.amount > 60",
        "join",
    ),
    (
        "SELECT o.order_id, k.price FROM orders o LEFT JOIN hq.catalogue k "
        "ON o.sku = k.sku AND k.price > 10 WHERE k.price IS NULL",
        "join",
    ),
    (
        "SELECT o.order_id, c.name, k.category FROM munich.orders o "
        "JOIN berlin.customers c ON o.customer_id = c.customer_id "
        "JOIN hq.catalogue k ON k.sku = o.sku WHERE c.vip",
        "join",
    ),
    (
        "SELECT k.category, c.city, sum(o.qty) FROM hq.catalogue k JOIN orders o ON o.sku = k.sku "
        "JOIN berlin.customers c ON c.customer_id = o.customer_id GROUP BY 1, 2",
        "aggregate",
    ),
    (
        "SELECT k.category, sum(o.amount) FROM munich.orders o JOIN hq.catalogue k "
        "USING (sku) GROUP BY 1",
        "aggregate",
    ),
]


BROADCAST += [
    # sums, counts, minima and maxima of the large side: grouped by join key before the join
    (
        "SELECT k.category, sum(o.amount), count(*), min(o.amount), max(o.order_id) "
        "FROM orders o JOIN hq.catalogue k ON o.qty = length(k.category) GROUP BY 1",
        "eager",
    ),
    (
        "SELECT k.category, count(*), count(o.amount), sum(o.qty) FROM orders o "
        "LEFT JOIN hq.catalogue k USING (sku) WHERE o.qty > 1 GROUP BY 1",
        "eager",
    ),
    (
        "SELECT o._node, k.category, avg(o.amount) FROM orders o JOIN hq.catalogue k "
        "USING (sku) WHERE k.price < 12 GROUP BY ALL",
        "eager",
    ),
]


@pytest.mark.parametrize(("sql", "shape"), BROADCAST, ids=[q[:60] for q, _ in BROADCAST])
def test_broadcast_joins_ship_the_small_side_and_agree(mesh, sql, shape):
    plan = mesh.plan(sql)
    assert plan.fragments and all(f.inputs for f in plan.fragments), plan.explain()
    large = {f.owner for f in plan.fragments}
    assert "hq" not in large, "the small side never moves to the coordinator"
    if shape in ("aggregate", "eager"):
        assert all(f.aggregate for f in plan.fragments), plan.explain()
    if shape == "eager":
        assert all("grouped before the join" in f.aggregate for f in plan.fragments)
    if shape == "top_n":
        assert all(f.top_n for f in plan.fragments), plan.explain()
    assert_agrees(mesh, sql, plan, ordered="ORDER BY" in sql)


@pytest.mark.parametrize(
    "sql",
    [
        # the large side null-supplying, or no condition: the ordinary split
        "SELECT k.sku, o.order_id FROM orders o RIGHT JOIN hq.catalogue k ON o.sku = k.sku",
        "SELECT k.sku, o.order_id FROM hq.catalogue k LEFT JOIN orders o ON o.sku = k.sku",
        "SELECT k.sku, o.order_id FROM orders o FULL JOIN hq.catalogue k ON o.sku = k.sku",
        "SELECT count(*) FROM orders o CROSS JOIN hq.catalogue k",
        # a plain small side, `*`, a subquery, and a volatile filter
        "SELECT o.order_id FROM orders o JOIN catalogue k USING (sku)",
        "SELECT * FROM orders o JOIN hq.catalogue k USING (sku)",
        "SELECT o.order_id FROM orders o JOIN hq.catalogue k USING (sku) "
        "WHERE k.price > (SELECT avg(price) FROM hq.catalogue)",
        "SELECT count(*) FROM orders o JOIN hq.catalogue k USING (sku) WHERE random() < 2",
    ],
)
def test_shapes_a_broadcast_cannot_answer_are_split_as_before(mesh, sql):
    plan = mesh.plan(sql)
    assert not any("which this node fetches" in f.pushed for f in plan.fragments), plan.explain()
    problem = first_difference(mesh.expect(sql), mesh.ask(sql))
    assert problem is None, f"{problem}\nplan:\n{plan.explain()}"


def test_a_broadcast_aggregate_moves_groups_not_rows(mesh):
    sql = (
        "SELECT k.category, sum(o.amount) FROM orders o JOIN hq.catalogue k USING (sku) GROUP BY 1"
    )
    plan = mesh.plan(sql)
    moved = sum(mesh.run(f).num_rows for f in plan.fragments)
    groups = mesh.expect("SELECT count(DISTINCT category) AS n FROM hq.catalogue").column("n")
    assert moved <= groups[0].as_py() * len(plan.fragments)


# Inner joins where neither side is small: a side with its own filter sends its distinct
# join keys to the other side's nodes, which drop rows no result can use.
SEMI_JOINS = [
    "SELECT o.order_id, p.order_id FROM orders o JOIN orders p "
    "ON o.customer_id = p.customer_id WHERE p.amount > 75 AND o.qty = 1",
    "SELECT count(*) FROM orders a JOIN orders b ON a.amount = b.amount WHERE b.qty = 5",
    "SELECT a.order_id FROM orders a JOIN orders b ON a.sku = b.sku AND a.customer_id = "
    "b.customer_id WHERE b.amount < 2 AND b.sku LIKE 'SKU-00%'",
]


@pytest.mark.parametrize("sql", SEMI_JOINS)
def test_semi_join_reduction_sends_fewer_rows_and_agrees(mesh, sql):
    plan = mesh.plan(sql)
    reduced = [f for f in plan.fragments if f.pushed.startswith("semi-join")]
    assert reduced, plan.explain()
    assert all(f.inputs and " IN (SELECT " in f.sql for f in reduced)
    problem = first_difference(mesh.expect(sql), mesh.ask(sql))
    assert problem is None, f"{problem}\nplan:\n{plan.explain()}"
    # What a reduced fragment sends is at most what it would send without the reduction.
    for fragment in reduced:
        unreduced = fragment.sql.rsplit(" AND ((", 1)[0] if " AND ((" in fragment.sql else None
        if unreduced is not None:
            assert mesh.run(fragment).num_rows <= mesh.run_sql(fragment, unreduced).num_rows


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT order_id, amount FROM orders WHERE order_id = 10050",
        "SELECT count(*), sum(qty) FROM orders WHERE order_id BETWEEN 290 AND 10010",
        "SELECT _node, count(*) FROM orders WHERE order_id > 10150 GROUP BY 1",
        "SELECT * FROM orders WHERE order_id IN (5, 99999) ORDER BY order_id",
        "SELECT count(*) FROM orders WHERE order_id < 0",
    ],
)
def test_pruning_by_column_bounds_keeps_every_answer(mesh, sql):
    from dataclasses import replace

    from shoal.products.stats import integer_bounds

    tables = []
    for node in mesh.nodes.values():
        for table in node.mesh_tables():
            if table.product == "_audit":  # a node's audit log, not a stored product
                continue
            snapshot = node.products.snapshot(table.product, table.version)
            tables.append(replace(table, bounds=integer_bounds(snapshot.dataset)))
    plan = plan_query(sql, tables)
    assert len({f.owner for f in plan.fragments}) < 3, plan.explain()
    got = execute_plan(plan, lambda f: mesh.run(f).to_reader()).read_all()
    problem = first_difference(mesh.expect(sql), got, ordered="ORDER BY" in sql)
    assert problem is None, f"{problem}\nplan:\n{plan.explain()}"


@pytest.mark.parametrize(
    ("sql", "k"),
    [
        (
            "SELECT order_id, amount FROM orders WHERE amount > 5 "
            "ORDER BY amount DESC NULLS LAST, order_id LIMIT 7",
            7,
        ),
        ("SELECT order_id FROM orders ORDER BY qty, order_id LIMIT 3 OFFSET 2", 5),
        (
            "SELECT o.order_id, k.title FROM orders o JOIN hq.catalogue k USING (sku) "
            "ORDER BY o.order_id DESC LIMIT 4",
            4,
        ),
    ],
)
def test_top_n_moves_at_most_k_rows_per_node(mesh, sql, k):
    plan = mesh.plan(sql)
    assert all(f.top_n for f in plan.fragments), plan.explain()
    moved = [mesh.run(f).num_rows for f in plan.fragments]
    assert all(rows <= k for rows in moved) and sum(moved) <= k * len(plan.fragments)
    problem = first_difference(mesh.expect(sql), mesh.ask(sql), ordered=True)
    assert problem is None, f"{problem}\nplan:\n{plan.explain()}"
