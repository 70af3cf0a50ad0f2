"""What the planner pushes to the nodes, what it keeps, and what it refuses."""

from __future__ import annotations

import pyarrow as pa
import pytest

from shoal.errors import LockdownError, NotFoundError, ShoalError, UnavailableError, UsageError
from shoal.query import TableRef, execute_plan, plan_query

ORDERS = pa.schema([("order_id", pa.int64()), ("amount", pa.float64()), ("city", pa.string())])
TABLES = [
    TableRef("berlin", "orders", ORDERS),
    TableRef("munich", "orders", pa.schema([("order_id", pa.int64()), ("amount", pa.float64())])),
    TableRef("hq", "catalogue", pa.schema([("sku", pa.string()), ("price", pa.float64())])),
]


def _fragment(plan, owner):
    return next(f for f in plan.fragments if f.owner == owner)


def test_projection_is_pushed():
    plan = plan_query("SELECT amount FROM orders", TABLES)
    fragment = _fragment(plan, "berlin")
    assert fragment.columns == ("amount",)
    assert fragment.sql == 'SELECT "amount" FROM "berlin"."orders"'
    assert _fragment(plan_query("SELECT * FROM orders", TABLES), "berlin").columns == (
        "order_id",
        "amount",
        "city",
    )


def test_count_star_is_counted_at_the_node():
    fragment = _fragment(plan_query("SELECT count(*) FROM orders", TABLES), "berlin")
    assert fragment.aggregate == "COUNT(*)"
    fragment = _fragment(
        plan_query("SELECT count(*) FROM orders WHERE amount > random()", TABLES), "berlin"
    )
    assert fragment.columns == ("amount",) and not fragment.aggregate


@pytest.mark.parametrize(
    "predicate",
    [
        "amount > 3",
        "amount BETWEEN 1 AND 2",
        "city IN ('Berlin', 'Köln')",
        "city LIKE 'B%'",
        "city ILIKE 'b%'",
        "city IS NULL",
        "city IS NOT NULL",
        "NOT amount < 2",
        "amount > 1 OR city = 'x'",
        "lower(city) = 'berlin'",
        "CAST(amount AS INTEGER) = 3",
    ],
)
def test_each_filter_kind_is_pushed(predicate):
    plan = plan_query(f"SELECT order_id FROM orders WHERE {predicate}", TABLES)
    fragment = _fragment(plan, "berlin")
    assert len(fragment.filters) == 1
    assert " WHERE " in fragment.sql


def test_filters_on_a_plain_name_go_to_every_owner_that_has_the_column():
    plan = plan_query("SELECT * FROM orders WHERE amount > 1 AND city = 'Berlin'", TABLES)
    assert len(_fragment(plan, "berlin").filters) == 2
    # munich has no city: it reads as NULL, so only the amount filter can run there.
    assert _fragment(plan, "munich").filters == ('"amount" > 1',)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM berlin.orders o LEFT JOIN munich.orders m ON o.order_id = m.order_id "
        "WHERE m.amount > 1",
        "SELECT * FROM berlin.orders o RIGHT JOIN munich.orders m ON o.order_id = m.order_id "
        "WHERE o.amount > 1",
        "SELECT * FROM berlin.orders o FULL JOIN munich.orders m ON o.order_id = m.order_id "
        "WHERE o.amount > 1 AND m.amount > 1",
    ],
)
def test_no_filters_into_the_null_supplying_side(sql):
    plan = plan_query(sql, TABLES)
    nullable = "munich" if "LEFT" in sql else "berlin"
    assert _fragment(plan, nullable).filters == ()
    assert any("outer join" in note for note in plan.notes)


def test_preserved_side_of_an_outer_join_still_gets_its_filter():
    plan = plan_query(
        "SELECT * FROM berlin.orders o LEFT JOIN munich.orders m ON o.order_id = m.order_id "
        "WHERE o.amount > 1",
        TABLES,
    )
    assert _fragment(plan, "berlin").filters == ('"amount" > 1',)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM berlin.orders WHERE amount > random()",
        "SELECT * FROM berlin.orders WHERE amount > (SELECT avg(amount) FROM munich.orders)",
        "SELECT * FROM berlin.orders WHERE order_id IN (SELECT order_id FROM munich.orders)",
        "SELECT city, sum(amount) FROM berlin.orders GROUP BY city HAVING sum(amount) > 3",
        "SELECT * FROM berlin.orders WHERE _node = 'berlin'",
    ],
)
def test_unsafe_predicates_stay_at_the_coordinator(sql):
    if "_node" in sql:
        sql = sql.replace("berlin.orders", "orders")
    plan = plan_query(sql, TABLES)
    for fragment in plan.fragments:
        if fragment.owner == "berlin":
            assert fragment.filters == (), fragment.sql


def test_a_cte_shadows_a_product():
    plan = plan_query("WITH orders AS (SELECT 1 AS x) SELECT * FROM orders", TABLES)
    assert plan.fragments == ()


def test_each_occurrence_gets_its_own_fragment():
    plan = plan_query(
        "SELECT * FROM berlin.orders a JOIN munich.orders b ON a.order_id = b.order_id "
        "WHERE a.amount > 1 AND b.amount < 5",
        TABLES,
    )
    assert [f.filters for f in plan.fragments] == [('"amount" > 1',), ('"amount" < 5',)]


def test_unknown_products_name_close_matches():
    with pytest.raises(NotFoundError) as caught:
        plan_query("SELECT * FROM ordrs", TABLES)
    assert "orders" in (caught.value.hint or "")
    with pytest.raises(NotFoundError) as caught:
        plan_query("SELECT * FROM berlin.ordres", TABLES)
    assert "berlin.orders" in (caught.value.hint or "")
    with pytest.raises(NotFoundError):
        plan_query("SELECT * FROM x.y.z", TABLES)


def test_conflicting_types_name_both_products():
    tables = [*TABLES, TableRef("vienna", "orders", pa.schema([("amount", pa.string())]))]
    with pytest.raises(UsageError) as caught:
        plan_query("SELECT * FROM orders", tables)
    assert "berlin.orders" in caught.value.message and "vienna.orders" in caught.value.message
    # Naming one product still works.
    assert plan_query("SELECT * FROM vienna.orders", tables).fragments


def test_a_product_with_a_node_column_cannot_be_unioned():
    tables = [TableRef("x", "t", pa.schema([("_node", pa.string())]))]
    with pytest.raises(UsageError, match="_node"):
        plan_query("SELECT * FROM t", tables)


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO berlin.orders VALUES (1, 2, 'x')",
        "DELETE FROM berlin.orders",
        "SELECT 1; SELECT 2",
        "ATTACH 'x.db'",
        "COPY (SELECT 1) TO 'x.csv'",
        "PRAGMA version",
        "SET threads = 1",
        "CREATE TABLE t AS SELECT 1",
        "INSTALL httpfs",
        "EXPORT DATABASE 'dump'",
    ],
)
def test_refusals_never_reach_a_node(sql):
    asked = []
    with pytest.raises(LockdownError):
        plan = plan_query(sql, TABLES)
        execute_plan(plan, lambda f: asked.append(f) or pa.table({}).to_reader())
    assert asked == []


@pytest.mark.parametrize(
    "sql", ["SELECT * FROM read_csv('/etc/passwd')", "SELECT * FROM glob('*')"]
)
def test_file_functions_are_refused_by_the_sandbox(sql):
    with pytest.raises((LockdownError, UsageError, NotFoundError)):
        plan_query(sql, TABLES)


@pytest.mark.parametrize(
    "sql",
    [
        "",
        "   ",
        "SELEC 1",
        "\x00\x01garbage",
        "SELECT (((((1",
        "SELECT " + "(" * 5000 + "1" + ")" * 5000,
    ],
)
def test_hostile_text_gets_a_clear_error(sql):
    with pytest.raises(ShoalError):
        plan_query(sql, TABLES)


def test_oversized_query_is_refused():
    with pytest.raises(UsageError, match="1 MiB"):
        plan_query("SELECT 1 -- " + "x" * (1024 * 1024), TABLES)


def test_a_failing_fragment_names_node_and_product():
    plan = plan_query("SELECT * FROM munich.orders", TABLES)

    def down(fragment):
        raise UnavailableError("connection refused")

    with pytest.raises(UnavailableError) as caught:
        execute_plan(plan, down)
    assert "munich.orders" in caught.value.message and "munich" in caught.value.message


def test_a_fragment_answering_the_wrong_columns_is_an_error():
    plan = plan_query("SELECT amount FROM berlin.orders", TABLES)
    with pytest.raises(ShoalError, match="columns"):
        execute_plan(plan, lambda f: pa.table({"other": [1]}).to_reader())


def test_explain_names_nodes_columns_and_filters():
    plan = plan_query(
        "SELECT o.order_id, c.price FROM orders o JOIN hq.catalogue c ON o.city = c.sku "
        "WHERE o.amount > 2",
        TABLES,
    )
    text = plan.explain()
    for word in ("node berlin:", "node munich:", "node hq:", '"amount" > 2', "coordinator:"):
        assert word in text
    data = plan.to_dict()
    assert {f["node"] for f in data["fragments"]} == {"berlin", "munich", "hq"}


def test_names_of_unaliased_columns_are_kept():
    plan = plan_query("SELECT count(*), sum(amount) FROM orders", TABLES)
    assert plan.columns == ("count_star()", "sum(amount)")


def test_top_n_runs_at_every_node():
    plan = plan_query(
        "SELECT order_id, amount FROM orders WHERE amount > 3 "
        "ORDER BY amount DESC, order_id LIMIT 5 OFFSET 2",
        TABLES,
    )
    for fragment in plan.fragments:
        assert fragment.top_n == 'ORDER BY "amount" DESC, "order_id" LIMIT 7'
        assert fragment.sql.endswith("LIMIT 7")
    assert "top-N pushed down" in plan.explain()
    positional = plan_query("SELECT order_id, amount AS a FROM orders ORDER BY 2 LIMIT 3", TABLES)
    assert _fragment(positional, "berlin").top_n == 'ORDER BY "amount" LIMIT 3'
    bare = plan_query("SELECT * FROM orders LIMIT 4", TABLES)
    assert [f.top_n for f in bare.fragments] == ["LIMIT 4", "LIMIT 4"]


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT city, count(*) FROM berlin.orders GROUP BY city ORDER BY city LIMIT 2",
        "SELECT DISTINCT city FROM berlin.orders ORDER BY city LIMIT 2",
        "SELECT order_id, row_number() OVER () FROM berlin.orders ORDER BY order_id LIMIT 2",
        "SELECT sum(amount) FROM berlin.orders LIMIT 1",
        "SELECT * FROM berlin.orders WHERE amount > random() ORDER BY order_id LIMIT 1",
        "SELECT * FROM berlin.orders o JOIN munich.orders m USING (order_id) "
        "ORDER BY o.amount LIMIT 3",
        "SELECT amount * 2 AS doubled FROM berlin.orders ORDER BY doubled LIMIT 3",
        "SELECT * FROM (SELECT * FROM berlin.orders ORDER BY amount LIMIT 3) t",
        "(SELECT order_id FROM berlin.orders ORDER BY order_id LIMIT 2) UNION ALL SELECT 1",
        "SELECT * FROM orders ORDER BY _node, order_id LIMIT 2",
    ],
)
def test_top_n_stays_at_the_coordinator_when_unsafe(sql):
    plan = plan_query(sql, TABLES)
    assert all(f.top_n == "" for f in plan.fragments), plan.explain()


def test_a_node_lacking_a_sort_column_sends_all_its_filtered_rows():
    plan = plan_query("SELECT city FROM orders ORDER BY city LIMIT 2", TABLES)
    assert _fragment(plan, "berlin").top_n and not _fragment(plan, "munich").top_n


def test_a_statement_over_one_node_runs_there_whole():
    tables = [*TABLES, TableRef("hq", "prices", pa.schema([("sku", pa.string())]), version=4)]
    sql = (
        "WITH cheap AS (SELECT sku FROM hq.catalogue WHERE price < 3) "
        "SELECT c.sku, count(*) OVER () FROM cheap c JOIN hq.prices p USING (sku) "
        "WHERE c.sku IN (SELECT sku FROM catalogue)"
    )
    plan = plan_query(sql, tables)
    (fragment,) = plan.fragments
    assert fragment.owner == "hq" and fragment.pushed.startswith("the whole statement")
    assert {fragment.product, *(name for name, _ in fragment.also)} == {"catalogue", "prices"}
    assert dict(fragment.also)["prices"] == 4
    assert fragment.columns == ("__shoal_c0", "__shoal_c1")
    assert plan.columns == ("sku", "count() OVER ()")
    # A plain name owned by one node gets its _node column at that node.
    assert "'hq' AS \"_node\"" in fragment.sql
    assert "runs at the node: the whole statement" in plan.explain()
    # Products of two owners, or a plain name two nodes own, are split as before.
    assert len(plan_query("SELECT * FROM berlin.orders, hq.catalogue", TABLES).fragments) == 2
    assert len(plan_query("SELECT count(*) FROM orders", TABLES).fragments) == 2


def test_a_co_located_statement_needs_a_node_holding_every_product():
    tables = [
        TableRef("hq", "catalogue", ORDERS, holders=("hq", "replica")),
        TableRef("hq", "prices", ORDERS, holders=("replica",)),
    ]
    sql = "SELECT * FROM hq.catalogue JOIN hq.prices USING (order_id)"
    (fragment,) = plan_query(sql, tables).fragments
    assert fragment.holders == ("replica",)
    tables[1] = TableRef("hq", "prices", ORDERS, holders=("elsewhere",))
    assert len(plan_query(sql, tables).fragments) == 2


def _with_statistics(rows: int, distinct: dict[str, int]) -> list[TableRef]:
    schema = pa.schema([("order_id", pa.int64()), ("city", pa.string()), ("amount", pa.float64())])
    return [
        TableRef(owner, "orders", schema, rows=rows, distinct=distinct)
        for owner in ("berlin", "munich")
    ]


def test_grouping_by_a_near_unique_key_pushes_only_projection_and_filters():
    tables = _with_statistics(1000, {"order_id": 990, "city": 3, "amount": 400})
    sql = "SELECT order_id, sum(amount) FROM orders GROUP BY order_id"
    plan = plan_query(sql, tables)
    assert not any(f.aggregate for f in plan.fragments)
    assert any("only projection and filters are pushed" in n for n in plan.notes)
    assert "catalog statistics" in plan.explain()
    grouped = plan_query("SELECT city, sum(amount) FROM orders GROUP BY city", tables)
    assert all(f.aggregate for f in grouped.fragments)
    assert any("partial aggregation chosen: about 6 groups" in n for n in grouped.notes)
    # Without statistics (or for an expression key) grouping at the nodes is assumed to pay.
    unknown = [TableRef(t.owner, t.product, t.schema) for t in tables]
    assert all(f.aggregate for f in plan_query(sql, unknown).fragments)
    by_expression = plan_query(
        "SELECT order_id % 2, count(*) FROM orders GROUP BY 1", tables
    ).fragments
    assert all(f.aggregate for f in by_expression)


def _bounded() -> list[TableRef]:
    schema = pa.schema([("order_id", pa.int64()), ("amount", pa.float64())])
    return [
        TableRef("berlin", "orders", schema, rows=100, bounds={"order_id": [1, 100]}),
        TableRef("munich", "orders", schema, rows=100, bounds={"order_id": [101, 200]}),
        TableRef("vienna", "orders", schema, rows=100),  # no bounds: always asked
    ]


@pytest.mark.parametrize(
    ("where", "asked"),
    [
        ("order_id = 42", {"berlin", "vienna"}),
        ("42 = order_id", {"berlin", "vienna"}),
        ("order_id IN (150, 7)", {"berlin", "munich", "vienna"}),
        ("order_id IN (150, 170)", {"munich", "vienna"}),
        ("order_id > 100", {"munich", "vienna"}),
        ("order_id >= 100", {"berlin", "munich", "vienna"}),
        ("order_id < 101", {"berlin", "vienna"}),
        ("order_id <= 0", {"vienna"}),
        ("order_id BETWEEN 120 AND 130", {"munich", "vienna"}),
        ("order_id = 150 OR order_id = 5", {"berlin", "munich", "vienna"}),
        ("(order_id = 150 OR order_id = 160)", {"munich", "vienna"}),
        ("order_id = -5", {"vienna"}),
        ("order_id = 42.5", {"berlin", "munich", "vienna"}),  # not an integer: no pruning
        ("amount = 42", {"berlin", "munich", "vienna"}),  # no bounds for amount
        ("order_id + 0 = 150", {"berlin", "munich", "vienna"}),
    ],
)
def test_nodes_whose_rows_cannot_pass_are_not_asked(where, asked):
    plan = plan_query(f"SELECT order_id, amount FROM orders WHERE {where}", _bounded())
    assert {f.owner for f in plan.fragments} == asked
    if len(asked) < 3:
        assert any("not asked" in n for n in plan.notes)


def test_pruning_every_node_still_answers_with_the_right_shape():
    tables = _bounded()[:2]
    plan = plan_query("SELECT count(*) AS n FROM orders WHERE order_id = 999", tables)
    assert len(plan.fragments) == 1
