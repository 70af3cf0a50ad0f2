"""Partial aggregation (`shoal/query/aggregates.py`): every shape the nodes pre-aggregate must
give DuckDB's answer with DuckDB's types, and every other shape must fall back, still right."""

from __future__ import annotations

from fractions import Fraction

import pytest
import sqlglot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shoal.results import first_difference

# `orders` is the union of berlin (with note), munich (with coupon) and hamburg (no rows);
# their common columns are order_id, customer_id, sku, amount (with NULLs), qty, ordered_at.
PUSHED = [
    # COUNT / SUM / AVG (DISTINCT x), with the other states merged over the (keys, x) pairs
    "SELECT count(DISTINCT sku) FROM orders",
    "SELECT sku, count(DISTINCT customer_id), count(*), sum(qty), avg(amount), min(amount) "
    "FROM orders GROUP BY sku",
    "SELECT _node, count(DISTINCT amount), count(*), count(amount), max(amount) "
    "FROM orders GROUP BY _node",
    "SELECT qty, sum(DISTINCT customer_id), avg(DISTINCT customer_id), "
    "count(DISTINCT customer_id) FROM orders GROUP BY qty",
    "SELECT count(DISTINCT lower(sku)), min(DISTINCT qty), max(amount), count(*) "
    "FROM orders WHERE amount > 70",
    "SELECT count(DISTINCT sku), count(*), sum(qty) FROM hamburg.orders",
    "SELECT sku, count(DISTINCT customer_id) FILTER (WHERE qty > 3) AS big, count(*) "
    "FROM orders GROUP BY sku",
    "SELECT var_samp(DISTINCT qty), stddev_pop(DISTINCT qty), count(*) FROM orders",
    "SELECT sku, lower(sku), count(DISTINCT lower(sku)), count(DISTINCT lower(sku)) FILTER "
    "(WHERE qty > 4) FROM orders GROUP BY sku",
    "SELECT lower(sku) AS s, count(DISTINCT lower(sku)) FROM orders GROUP BY lower(sku)",
    # BOOL_AND / BOOL_OR
    "SELECT sku, bool_and(qty > 1), bool_or(amount IS NULL) FROM orders GROUP BY sku",
    "SELECT bool_and(qty < 9), bool_or(qty > 9), count(*) FROM hamburg.orders",
    # variance and standard deviation
    "SELECT sku, stddev_samp(amount), stddev_pop(amount), var_samp(amount), var_pop(amount), "
    "stddev(qty), variance(qty) FROM orders GROUP BY sku",
    "SELECT order_id % 97 AS b, var_samp(amount), var_pop(amount), stddev_samp(qty), "
    "stddev_pop(qty) FROM orders WHERE order_id < 120 OR order_id > 10180 GROUP BY b",
    "SELECT var_samp(amount), var_pop(amount), stddev_samp(amount) FROM orders WHERE qty > 99",
    "SELECT var_samp(amount), var_pop(amount), stddev_samp(qty), stddev_pop(qty) "
    "FROM orders WHERE order_id = 1",
    "SELECT _node, variance(qty), stddev(amount) FROM orders GROUP BY _node",
    # FILTER on every kind
    "SELECT sku, sum(amount) FILTER (WHERE qty > 2), count(*) FILTER (WHERE amount IS NULL), "
    "avg(qty) FILTER (WHERE sku LIKE 'SKU-00%') FROM orders GROUP BY sku",
    "SELECT count(*) FILTER (WHERE qty = 5) AS fives, min(amount) FILTER (WHERE qty = 5), "
    "var_samp(amount) FILTER (WHERE qty < 3), bool_or(qty = 1) FILTER (WHERE amount > 79) "
    "FROM orders",
    "SELECT _node, max(ordered_at) FILTER (WHERE lower(sku) = 'sku-001') FROM orders "
    "GROUP BY _node",
    "SELECT count(*) FILTER (WHERE qty > 100), sum(qty) FILTER (WHERE qty > 100) FROM orders",
    # expressions as group keys
    "SELECT CAST(ordered_at AS DATE) AS day, count(*), sum(amount) FROM orders "
    "GROUP BY CAST(ordered_at AS DATE) ORDER BY day LIMIT 10",
    "SELECT date_trunc('month', ordered_at), count(*), avg(qty) FROM orders GROUP BY 1",
    "SELECT lower(sku) AS s, sum(qty) FROM orders GROUP BY s HAVING sum(qty) > 60",
    "SELECT qty * 2 AS dbl, count(*), avg(amount) FROM orders GROUP BY qty * 2 ORDER BY dbl",
    "SELECT year(ordered_at), month(ordered_at), count(DISTINCT sku) FROM orders "
    "GROUP BY year(ordered_at), month(ordered_at)",
    "SELECT extract(dow FROM ordered_at) AS dow, date_part('hour', ordered_at) AS h, count(*) "
    "FROM orders GROUP BY 1, 2",
    "SELECT upper(lower(sku)) || '!' AS s, count(*) FROM orders GROUP BY lower(sku)",
    "SELECT customer_id % 3, count(*), sum(qty) FROM hamburg.orders GROUP BY customer_id % 3",
    "SELECT amount > 40 AS big, count(*), count(amount) FROM orders GROUP BY amount > 40",
    "SELECT day(ordered_at) AS d, count(*) FROM orders GROUP BY day(ordered_at) "
    "ORDER BY count(*) DESC, d LIMIT 3",
    # GROUP BY ALL
    "SELECT sku, qty, count(*), sum(amount) FROM orders GROUP BY ALL",
    "SELECT lower(sku) AS s, _node, count(*) FROM orders GROUP BY ALL ORDER BY s, _node",
    "SELECT count(*), sum(qty) FROM orders WHERE qty > 99 GROUP BY ALL",
    # ROLLUP, CUBE, GROUPING SETS over the merged partials
    "SELECT sku, qty, count(*), sum(amount) FROM orders GROUP BY ROLLUP (sku, qty)",
    "SELECT _node, qty, count(*), avg(amount), var_samp(amount) FROM orders "
    "GROUP BY CUBE (_node, qty)",
    "SELECT sku, count(*), count(DISTINCT customer_id) FROM orders "
    "GROUP BY GROUPING SETS ((sku), ())",
    "SELECT sku, count(*), sum(qty) FROM orders WHERE qty > 99 GROUP BY ROLLUP (sku)",
    "SELECT CAST(ordered_at AS DATE) AS d, qty, sum(qty), bool_and(qty > 1) FROM orders "
    "GROUP BY ROLLUP (CAST(ordered_at AS DATE), qty)",
    # HAVING on a partial, ORDER BY ... LIMIT over groups
    "SELECT sku, count(DISTINCT customer_id) AS c FROM orders GROUP BY sku "
    "HAVING count(DISTINCT customer_id) > 15 ORDER BY c DESC, sku LIMIT 5",
    "SELECT customer_id, stddev_samp(amount) AS s FROM orders GROUP BY customer_id "
    "HAVING count(*) > 10 ORDER BY s DESC NULLS LAST, customer_id LIMIT 5",
    # a select-list alias with a column's name, read where only the alias can be meant
    "SELECT sku, sum(qty) AS qty FROM orders GROUP BY sku ORDER BY qty, sku",
    "SELECT sku, -sum(qty) AS qty FROM orders GROUP BY sku HAVING qty < -100",
    # one owner: its own columns, NULL groups
    "SELECT note, count(*), count(DISTINCT sku), bool_or(qty = 5) FROM berlin.orders GROUP BY note",
    "SELECT coupon, var_pop(amount), count(*) FILTER (WHERE qty > 2) FROM munich.orders "
    "GROUP BY coupon",
    "SELECT h.sku, count(*) FILTER (WHERE h.qty > 1) FROM hamburg.orders h GROUP BY h.sku",
]

FALLBACKS = [
    # two different DISTINCT arguments would need two sets of pairs
    "SELECT count(DISTINCT sku), count(DISTINCT customer_id) FROM orders",
    # munich has no `note`: its rows read NULL there, which a node cannot group
    "SELECT note, count(*) FROM orders GROUP BY note",
    # round() is not an expression the nodes run
    "SELECT round(amount), count(*) FROM orders GROUP BY round(amount)",
    "SELECT sku, grouping(sku), count(*) FROM orders GROUP BY ROLLUP (sku)",
    "SELECT sku, median(amount) FROM orders GROUP BY sku",
    "SELECT sku, count(*) FILTER (WHERE _node = 'berlin') FROM orders GROUP BY sku",
    "SELECT sku, count(*) FILTER (WHERE amount > random() * 100 + 200) FROM orders GROUP BY sku",
    # an aggregate sqlglot does not know would aggregate the partial rows
    "SELECT qty, fsum(qty), count(*) FROM orders GROUP BY qty",
    "SELECT sku, fsum(amount) FROM orders GROUP BY sku",
    # a select-list alias with a column's name, where DuckDB might read either
    "SELECT upper(sku) AS sku, count(*) FROM orders GROUP BY sku",
    "SELECT lower(sku) AS sku, count(*) FROM orders GROUP BY lower(sku)",
    # the coordinator adds `_node`: no node can send pairs of it
    "SELECT count(DISTINCT _node) FROM orders",
    # an order inside the aggregate: which row comes first is not known at a node
    "SELECT count(DISTINCT sku ORDER BY sku) FROM orders",
    "SELECT sku, any_value(qty ORDER BY order_id) FROM orders GROUP BY sku",
    # a subquery in WHERE stays at the coordinator, so the nodes cannot group
    "SELECT sku, count(*) FROM orders WHERE amount > (SELECT 10) GROUP BY sku",
]


def _aggregated_at_the_nodes(plan) -> bool:
    """Every fragment groups its node's rows: a partial aggregate, or the whole statement
    when every product it reads lives on one node (a qualified name)."""
    return bool(plan.fragments) and all(
        f.aggregate or getattr(f, "pushed", "") for f in plan.fragments
    )


def _agrees(mesh, sql: str, rel_tol: float = 1e-9) -> None:
    expected = mesh.expect(sql)
    got = mesh.ask(sql)
    ordered = sqlglot.parse_one(sql, read="duckdb").args.get("order") is not None
    problem = first_difference(expected, got, ordered=ordered, rel_tol=rel_tol)
    assert problem is None, f"{problem}\nplan:\n{mesh.plan(sql).explain()}"
    assert got.schema.types == expected.schema.types


@pytest.mark.parametrize("sql", PUSHED)
def test_pushed_aggregates_agree(mesh, sql):
    plan = mesh.plan(sql)
    assert _aggregated_at_the_nodes(plan), plan.explain()
    _agrees(mesh, sql)


def test_there_are_at_least_thirty_pushed_shapes():
    assert len(PUSHED) >= 30


@pytest.mark.parametrize("sql", FALLBACKS)
def test_other_shapes_fall_back_and_agree(mesh, sql):
    plan = mesh.plan(sql)
    assert not any(f.aggregate for f in plan.fragments), plan.explain()
    _agrees(mesh, sql)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT var_samp(1000000000 + amount / 1000), var_pop(1000000000 + amount / 1000), "
        "stddev_samp(1000000000 + amount / 1000) FROM orders",
        "SELECT _node, var_samp(1e9 + qty / 7), stddev_pop(1e9 + qty / 7) FROM orders "
        "GROUP BY _node",
        "SELECT sku, variance(1e9 + amount / 100) FROM orders GROUP BY sku",
    ],
)
def test_variance_keeps_its_precision_around_large_values(mesh, sql):
    """Values of 1e9 plus a little noise: a merge that subtracts sums of squares (1e18) would
    lose every digit of a variance near 1e-4; the parallel formula keeps most of them."""
    plan = mesh.plan(sql)
    assert all(f.aggregate for f in plan.fragments)
    # DuckDB's own answer is about 1e-6 off the exact one here (see the test below).
    _agrees(mesh, sql, rel_tol=1e-5)


def test_variance_is_near_the_exact_one(mesh):
    values = mesh.expect(
        "SELECT 1000000000 + amount / 1000 AS v FROM orders WHERE amount IS NOT NULL"
    ).column("v")
    exact = [Fraction(v) for v in values.to_pylist()]
    mean = sum(exact) / len(exact)
    squares = sum((v - mean) ** 2 for v in exact)
    got = mesh.ask(
        "SELECT var_samp(1000000000 + amount / 1000) AS s, var_pop(1000000000 + amount / 1000) "
        "AS p FROM orders"
    ).to_pylist()[0]
    assert got["s"] == pytest.approx(float(squares / (len(exact) - 1)), rel=2e-6)
    assert got["p"] == pytest.approx(float(squares / len(exact)), rel=2e-6)


def test_any_value_is_a_value_of_its_group(mesh):
    sql = (
        "SELECT sku, any_value(customer_id) AS c, any_value(amount) FILTER (WHERE qty > 3) AS a "
        "FROM orders GROUP BY sku"
    )
    assert all(f.aggregate for f in mesh.plan(sql).fragments)
    got = mesh.ask(sql)
    assert got.schema.types == mesh.expect(sql).schema.types
    rows = mesh.expect("SELECT sku, customer_id, amount, qty FROM orders").to_pylist()
    assert got.num_rows == len({r["sku"] for r in rows})
    for row in got.to_pylist():
        group = [r for r in rows if r["sku"] == row["sku"]]
        assert row["c"] in {r["customer_id"] for r in group}
        amounts = {r["amount"] for r in group if r["qty"] > 3 and r["amount"] is not None}
        assert row["a"] in amounts if amounts else row["a"] is None


def test_an_expression_key_moves_groups_not_rows(mesh):
    sql = "SELECT CAST(ordered_at AS DATE) AS d, count(*), avg(amount) FROM orders GROUP BY 1"
    plan = mesh.plan(sql)
    assert all(f.aggregate for f in plan.fragments)
    moved = sum(
        mesh.nodes[f.holders[0]]
        .serve_fragment(f.owner, f.product, f.sql, f.version)
        .read_all()
        .num_rows
        for f in plan.fragments
    )
    groups = mesh.expect(f"SELECT count(*) AS n FROM ({sql})").column("n")[0].as_py()
    rows = mesh.expect("SELECT count(*) AS n FROM orders").column("n")[0].as_py()
    assert moved <= groups * len(plan.fragments)
    assert moved < rows


def test_explain_names_the_node_states_and_keys(mesh):
    plan = mesh.plan(
        "SELECT lower(sku), count(DISTINCT customer_id), var_pop(qty) FILTER (WHERE qty > 1) "
        "FROM orders GROUP BY lower(sku)"
    )
    text = plan.explain()
    assert "partial aggregate: GROUP BY LOWER(sku) AS __shoal_k0, customer_id:" in text
    assert "VAR_POP(qty) FILTER(WHERE qty > 1)" in text


# -- generated ----------------------------------------------------------------------------
TABLES = ["orders", "berlin.orders", "munich.orders", "hamburg.orders"]
KEYS = [
    "sku",
    "qty",
    "customer_id % 4",
    "CAST(ordered_at AS DATE)",
    "lower(sku)",
    "qty * 2",
    "date_trunc('month', ordered_at)",
    "amount > 40",
    "year(ordered_at)",
    "extract(hour FROM ordered_at)",
    "date_part('dow', ordered_at)",
    "date_trunc('week', CAST(ordered_at AS DATE))",
]
MEASURES = [
    "count(*)",
    "count(amount)",
    "sum(qty)",
    "min(amount)",
    "max(ordered_at)",
    "avg(amount)",
    "bool_and(qty > 2)",
    "bool_or(amount > 70)",
    "var_samp(amount)",
    "stddev_pop(qty)",
    "var_pop(amount)",
]
CONDITIONS = ["qty > 2", "amount IS NULL", "sku IN ('SKU-001', 'SKU-002')", "amount < 30"]
DISTINCT = ["count(DISTINCT {})", "sum(DISTINCT {})", "avg(DISTINCT {})"]


@st.composite
def aggregate_query(draw) -> str:
    table = draw(st.sampled_from(TABLES))
    keys = draw(st.lists(st.sampled_from(KEYS), max_size=2, unique=True))
    if table == "orders" and draw(st.booleans()):
        keys.append("_node")
    measures = draw(st.lists(st.sampled_from(MEASURES), min_size=1, max_size=3, unique=True))
    if draw(st.booleans()):
        argument = draw(st.sampled_from(["customer_id", "qty", "sku"]))
        template = "count(DISTINCT {})" if argument == "sku" else draw(st.sampled_from(DISTINCT))
        measures.append(template.format(argument))
    measures = [
        f"{m} FILTER (WHERE {draw(st.sampled_from(CONDITIONS))})" if draw(st.booleans()) else m
        for m in measures
    ]
    where = ""
    if draw(st.booleans()):
        where = f" WHERE {draw(st.sampled_from(CONDITIONS))}"
    select = ", ".join(keys + measures)
    if not keys:
        return f"SELECT {select} FROM {table}{where}"
    form = draw(st.sampled_from(["plain", "position", "all", "rollup", "cube"]))
    if form == "position":
        group = ", ".join(str(i + 1) for i in range(len(keys)))
    elif form == "all":
        group = "ALL"
    elif form in ("rollup", "cube") and "amount > 40" not in keys:  # sqlglot cannot parse it
        group = f"{form.upper()} ({', '.join(keys)})"
    else:
        group = ", ".join(keys)
    return f"SELECT {select} FROM {table}{where} GROUP BY {group}"


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(aggregate_query())
def test_generated_aggregates_are_pushed_and_agree(mesh, sql):
    plan = mesh.plan(sql)
    assert _aggregated_at_the_nodes(plan), f"{sql}\n{plan.explain()}"
    _agrees(mesh, sql)
