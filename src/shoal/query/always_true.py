"""Whether a row filter holds for every row of a product version, from its statistics.

A policy's row filter is often true for all of a node's own rows: `store = :store` at the
store itself, or `amount >= :min_amount` with a floor below every amount. Running it
still costs a comparison per row on every read (a third of a plain aggregate's time). When
the version's Parquet statistics prove it true for every row, the node serves the view
without it; the rows shown are the same, by the proof.

Only what can be proven safely is judged: ANDs of a numeric column compared with a number
(or a string literal that reads as one, as bound attributes are), or BETWEEN two, and only
on columns with no NULL in any row group (NULL fails every comparison). Float columns are
judged for `>` and `>=` only: Parquet statistics leave NaN out, and DuckDB orders NaN
above every number, so NaN passes a lower bound but fails anything else. Anything else is
not proven, and the filter runs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from shoal.products.stats import ValueRange

__all__ = ["always_true"]

_INTEGER = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")
_MIRRORED = {"=": "=", ">": "<", ">=": "<=", "<": ">", "<=": ">="}
_OPERATORS: dict[type[exp.Expr], str] = {
    exp.EQ: "=",
    exp.GT: ">",
    exp.GTE: ">=",
    exp.LT: "<",
    exp.LTE: "<=",
}


def always_true(where: str, ranges: Mapping[str, ValueRange]) -> bool:
    """Whether `where` is true for every row whose columns lie within `ranges` (lower-case
    column names)."""
    if not where or not ranges:
        return False
    try:
        condition = sqlglot.parse_one(where, read="duckdb")
    except (SqlglotError, RecursionError):
        return False
    conjuncts = list(condition.flatten()) if isinstance(condition, exp.And) else [condition]
    return all(_holds(conjunct, ranges) for conjunct in conjuncts)


def _holds(conjunct: exp.Expr, ranges: Mapping[str, ValueRange]) -> bool:
    if isinstance(conjunct, exp.Paren):
        return _holds(conjunct.this, ranges)
    if isinstance(conjunct, exp.And):
        return all(_holds(part, ranges) for part in conjunct.flatten())
    if isinstance(conjunct, exp.Between):
        seen = _range_of(conjunct.this, ranges)
        if seen is None or seen.floating:
            return False
        low = _number(conjunct.args.get("low"), seen)
        high = _number(conjunct.args.get("high"), seen)
        return low is not None and high is not None and low <= seen.low and seen.high <= high
    operator = _OPERATORS.get(type(conjunct))
    if operator is None:
        return False
    column, literal = conjunct.this, conjunct.expression
    if not isinstance(column, exp.Column):  # `5 < x`: read as `x > 5`
        column, literal, operator = literal, column, _MIRRORED[operator]
    seen = _range_of(column, ranges)
    if seen is None or (seen.floating and operator not in (">", ">=")):
        return False
    value = _number(literal, seen)
    if value is None:
        return False
    return {
        "=": seen.low == seen.high == value,
        ">": seen.low > value,
        ">=": seen.low >= value,
        "<": seen.high < value,
        "<=": seen.high <= value,
    }[operator]


def _range_of(node: exp.Expr, ranges: Mapping[str, ValueRange]) -> ValueRange | None:
    if not isinstance(node, exp.Column) or node.table:
        return None
    found = ranges.get(node.name.lower())
    return found if found is not None and not found.nulls else None


def _number(node: exp.Expr | None, column: ValueRange) -> float | None:
    """The literal's value as the column's type would read it, or None when it is not a
    plain finite number (then nothing is proven, and a literal the column cannot take
    still fails the query as it would have)."""
    negative = isinstance(node, exp.Neg)
    if negative and node is not None:
        node = node.this
    if not isinstance(node, exp.Literal):
        return None
    text = node.this.strip()
    # Python reads more than DuckDB casts (`1_000`, `nan`): only plain digits count.
    if not (_FLOAT if column.floating else _INTEGER).fullmatch(text):
        return None
    value = float(text) if column.floating else int(text)
    if not math.isfinite(value):
        return None
    return -value if negative else value
