"""Generated queries (projections, filters, grouping, ordering) must agree with one DuckDB."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shoal.results import first_difference

from .conftest import SKUS

TABLES = {
    "orders": [
        "order_id",
        "customer_id",
        "sku",
        "amount",
        "qty",
        "ordered_at",
        "note",
        "coupon",
        "_node",
    ],
    "berlin.orders": ["order_id", "customer_id", "sku", "amount", "qty", "ordered_at", "note"],
    "munich.orders": ["order_id", "customer_id", "sku", "amount", "qty", "ordered_at", "coupon"],
    "hamburg.orders": ["order_id", "customer_id", "sku", "amount", "qty", "ordered_at", "note"],
}
NUMERIC = {"order_id": (1, 10_300), "customer_id": (0, 31), "amount": (0, 81), "qty": (0, 6)}
TEXT = {
    "sku": SKUS,
    "note": ["Anna", "Zoë", "李雷", "O'Brien", "nobody"],
    "coupon": ["AUTUMN", "WELCOME", "X"],
    "_node": ["berlin", "munich", "hamburg", "hq"],
}


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@st.composite
def predicate(draw, columns: list[str], depth: int = 0) -> str:
    numeric = [c for c in columns if c in NUMERIC]
    text = [c for c in columns if c in TEXT]
    kinds = ["cmp", "in", "between", "null", "like", "time"]
    if depth < 2:
        kinds += ["and", "or", "not"]
    kind = draw(st.sampled_from(kinds))
    if kind in ("and", "or"):
        left = draw(predicate(columns, depth + 1))
        right = draw(predicate(columns, depth + 1))
        return f"({left} {kind.upper()} {right})"
    if kind == "not":
        return f"NOT ({draw(predicate(columns, depth + 1))})"
    if kind == "null":
        column = draw(st.sampled_from(columns))
        return f"{column} IS {draw(st.sampled_from(['', 'NOT ']))}NULL"
    if kind == "time" and "ordered_at" in columns:
        day = draw(st.integers(1, 28))
        month = draw(st.integers(1, 5))
        op = draw(st.sampled_from(["<", ">=", "="]))
        return f"ordered_at {op} TIMESTAMP '2026-{month:02d}-{day:02d} 12:00:00'"
    if kind in ("like",) and text:
        column = draw(st.sampled_from(text))
        prefix = _quote(draw(st.sampled_from(TEXT[column]))[:2] + "%")
        return f"{column} {draw(st.sampled_from(['LIKE', 'ILIKE', 'NOT LIKE']))} {prefix}"
    if kind == "in" and (text or numeric):
        column = draw(st.sampled_from(text + numeric))
        if column in TEXT:
            values = draw(st.lists(st.sampled_from(TEXT[column]), min_size=1, max_size=4))
            items = ", ".join(_quote(v) for v in values)
        else:
            low, high = NUMERIC[column]
            values = draw(st.lists(st.integers(low, high), min_size=1, max_size=4))
            items = ", ".join(str(v) for v in values)
        return f"{column} {draw(st.sampled_from(['IN', 'NOT IN']))} ({items})"
    if kind == "between" and numeric:
        column = draw(st.sampled_from(numeric))
        low, high = NUMERIC[column]
        a, b = sorted(draw(st.lists(st.integers(low, high), min_size=2, max_size=2)))
        return f"{column} BETWEEN {a} AND {b}"
    if numeric:
        column = draw(st.sampled_from(numeric))
        low, high = NUMERIC[column]
        op = draw(st.sampled_from(["=", "<>", "<", "<=", ">", ">="]))
        return f"{column} {op} {draw(st.integers(low, high))}"
    return "TRUE"


@st.composite
def query(draw) -> tuple[str, bool]:
    table = draw(st.sampled_from(sorted(TABLES)))
    columns = TABLES[table]
    where = draw(st.one_of(st.none(), predicate(columns)))
    where_sql = f" WHERE {where}" if where else ""
    if draw(st.booleans()):
        keys = draw(st.lists(st.sampled_from(columns), min_size=1, max_size=2, unique=True))
        measures = [
            "count(*) AS n",
            f"{draw(st.sampled_from(['sum', 'min', 'max', 'avg']))}(qty) AS q",
            "count(DISTINCT sku) AS skus",
        ]
        select = ", ".join(
            keys + draw(st.lists(st.sampled_from(measures), min_size=1, max_size=3, unique=True))
        )
        having = " HAVING count(*) > 1" if draw(st.booleans()) else ""
        sql = f"SELECT {select} FROM {table}{where_sql} GROUP BY {', '.join(keys)}{having}"
        return sql, False
    chosen = draw(st.lists(st.sampled_from(columns), min_size=1, max_size=4, unique=True))
    distinct = "DISTINCT " if draw(st.booleans()) else ""
    sql = f"SELECT {distinct}{', '.join(chosen)} FROM {table}{where_sql}"
    if draw(st.booleans()):
        # A total order over the selected columns (NULLs placed) makes LIMIT deterministic.
        order = ", ".join(f"{c} NULLS FIRST" for c in chosen)
        if not distinct:
            order += ", " + ", ".join(f"{c}" for c in columns if c not in chosen and c != "_node")
            order += ", _node" if "_node" in columns and "_node" not in chosen else ""
        limit = draw(st.integers(0, 40))
        return f"{sql} ORDER BY {order} LIMIT {limit}", not distinct
    return sql, False


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(query())
def test_generated_queries_agree(mesh, generated):
    sql, ordered = generated
    expected = mesh.expect(sql)
    got = mesh.ask(sql)
    problem = first_difference(expected, got, ordered=ordered)
    assert problem is None, f"{sql}\n{problem}\n{mesh.plan(sql).explain()}"
