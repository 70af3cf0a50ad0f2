"""Whether a filter can pass any row whose integer columns lie within known bounds.

Used twice: the planner skips a node whose product's [min, max] rules out a pushed filter,
and a node skips blocks of its in-memory columns whose [min, max] rule it out (zone maps).
Only conjuncts of an integer column against integer literals are judged (`=`, `<`, `<=`,
`>`, `>=`, `IN`, `BETWEEN` and ORs of those); anything else may pass, so nothing is skipped
on its account.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

__all__ = ["excludes", "scan_filter"]


def excludes(conjunct: exp.Expr, bounds: Mapping[str, Sequence[int]]) -> bool:
    """Whether `conjunct` is false (or NULL) for every value within the column's bounds."""
    if isinstance(conjunct, exp.Paren):
        return excludes(conjunct.this, bounds)
    if isinstance(conjunct, exp.Or):
        return excludes(conjunct.this, bounds) and excludes(conjunct.expression, bounds)
    if isinstance(conjunct, exp.In) and not conjunct.args.get("query"):
        low_high = _bounds_of(conjunct.this, bounds)
        values = [_integer(v) for v in conjunct.expressions]
        if low_high is None or not values or any(v is None for v in values):
            return False
        return all(not low_high[0] <= v <= low_high[1] for v in values if v is not None)
    if isinstance(conjunct, exp.Between):
        low_high = _bounds_of(conjunct.this, bounds)
        low, high = _integer(conjunct.args.get("low")), _integer(conjunct.args.get("high"))
        if low_high is None or low is None or high is None:
            return False
        return high < low_high[0] or low > low_high[1]
    comparisons: dict[type[exp.Expr], str] = {
        exp.EQ: "=",
        exp.GT: ">",
        exp.GTE: ">=",
        exp.LT: "<",
        exp.LTE: "<=",
    }
    operator = comparisons.get(type(conjunct))
    if operator is None:
        return False
    column, value = conjunct.this, _integer(conjunct.expression)
    if not isinstance(column, exp.Column):  # `5 < x`: read as `x > 5`
        column, value = conjunct.expression, _integer(conjunct.this)
        operator = {"=": "=", ">": "<", ">=": "<=", "<": ">", "<=": ">="}[operator]
    low_high = _bounds_of(column, bounds)
    if low_high is None or value is None:
        return False
    low, high = low_high
    return {
        "=": not low <= value <= high,
        ">": high <= value,
        ">=": high < value,
        "<": low >= value,
        "<=": low > value,
    }[operator]


def _bounds_of(node: exp.Expr, bounds: Mapping[str, Sequence[int]]) -> tuple[int, int] | None:
    if not isinstance(node, exp.Column):
        return None
    found = bounds.get(node.name.lower())
    return (int(found[0]), int(found[1])) if found is not None and len(found) == 2 else None


def _integer(node: exp.Expr | None) -> int | None:
    """The value of an integer literal (or a negated one), else None."""
    if isinstance(node, exp.Neg):
        inner = _integer(node.this)
        return -inner if inner is not None else None
    if isinstance(node, exp.Literal) and node.is_int:
        return int(node.this)
    return None


def scan_filter(sql: str) -> tuple[str, Callable[[Mapping[str, Sequence[int]]], bool]] | None:
    """For a plain `SELECT ... FROM one_table WHERE ...` (what most fragments are): the
    table's name and a test that says whether rows within given bounds may pass its WHERE.
    None for anything else (joins, subqueries in FROM, no WHERE), which is never pruned."""
    if "where" not in sql.lower():
        return None
    try:
        tree = sqlglot.parse_one(sql, read="duckdb")
    except (SqlglotError, RecursionError):
        return None
    if not isinstance(tree, exp.Select) or any(
        tree.args.get(k) for k in ("joins", "with", "with_")
    ):
        return None
    source = tree.args.get("from_") or tree.args.get("from")
    where = tree.args.get("where")
    if source is None or where is None or not isinstance(source.this, exp.Table):
        return None
    condition = where.this
    conjuncts = list(condition.flatten()) if isinstance(condition, exp.And) else [condition]

    def may_pass(bounds: Mapping[str, Sequence[int]]) -> bool:
        return not any(excludes(conjunct, bounds) for conjunct in conjuncts)

    return source.this.name, may_pass
