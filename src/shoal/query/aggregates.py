"""Partial aggregation: each node groups and aggregates its own rows; the coordinator merges.

For a statement that aggregates one product (or a union of products under one name), each
node computes a partial state per group and the coordinator combines the states:

    COUNT(*), COUNT(x)   node: COUNT        coordinator: SUM of the counts
    SUM(x)               node: SUM          coordinator: SUM of the sums
    MIN(x), MAX(x)       node: MIN / MAX    coordinator: MIN / MAX of those
    AVG(x)               node: SUM and COUNT coordinator: SUM of sums / SUM of counts

Only statements where this cannot change an answer qualify: the outermost SELECT reads one
occurrence with no join and no subquery, every WHERE conjunct runs at the nodes, the group
keys are plain columns (or `_node`), and every aggregate is one of those above without
DISTINCT or FILTER. Anything else keeps the projection-and-filter split.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa
from sqlglot import exp

__all__ = ["PartialAggregation", "plan_partial_aggregation"]

_NODE_COLUMN = "_node"
_SIMPLE = (exp.Count, exp.Sum, exp.Min, exp.Max, exp.Avg)


@dataclass
class PartialAggregation:
    keys: list[str]  # group key columns read at the nodes (not `_node`)
    grouped: bool = False  # the statement has GROUP BY (perhaps only by `_node`)
    partials: list[tuple[str, exp.Expr]] = field(default_factory=list)  # alias, node aggregate
    combines: list[tuple[exp.Expr, exp.Expr]] = field(default_factory=list)  # tree node, merge

    def describe(self) -> str:
        states = ", ".join(p.sql(dialect="duckdb") for _, p in self.partials)
        keys = f"GROUP BY {', '.join(self.keys)}: " if self.keys else ""
        return f"{keys}{states}"


def plan_partial_aggregation(
    tree: exp.Expr,
    alias: str,
    schemas: list[pa.Schema],
    all_filters_pushed: bool,
) -> PartialAggregation | None:
    """The partial aggregation for `tree` over the occurrence `alias`, or None."""
    if not isinstance(tree, exp.Select) or not all_filters_pushed:
        return None
    for part in ("joins", "qualify", "distinct", "laterals", "pivots", "windows"):
        if tree.args.get(part):
            return None
    if any(isinstance(n, exp.Subquery | exp.Window | exp.Filter) for n in tree.walk()):
        return None
    if any(isinstance(n, exp.Select) and n is not tree for n in tree.walk()):
        return None
    aggregates = [n for n in tree.find_all(exp.AggFunc)]
    if not aggregates or not all(type(a) in _SIMPLE for a in aggregates):
        return None
    common = _common_columns(schemas)
    keys = _group_keys(tree, alias, common)
    if keys is None:
        return None
    plan = PartialAggregation(
        [k for k in keys if k != _NODE_COLUMN], grouped=tree.args.get("group") is not None
    )
    for index, aggregate in enumerate(aggregates):
        if aggregate.find(exp.Distinct) is not None:
            return None
        merged = _split(aggregate, index, alias, common, plan)
        if merged is None:
            return None
        plan.combines.append((aggregate, merged))
    return plan


def _common_columns(schemas: list[pa.Schema]) -> dict[str, pa.DataType]:
    """Columns every product under the name has (with their type)."""
    first, *rest = schemas
    names = {f.name.lower(): f.type for f in first}
    for schema in rest:
        names = {n: t for n, t in names.items() if n in {f.name.lower() for f in schema}}
    return names


def _group_keys(tree: exp.Select, alias: str, common: dict[str, pa.DataType]) -> list[str] | None:
    group = tree.args.get("group")
    if group is None:
        return []
    if any(group.args.get(k) for k in ("rollup", "cube", "grouping_sets", "all", "totals")):
        return None
    keys = []
    for item in group.expressions:
        if isinstance(item, exp.Literal) and item.is_int:
            position = int(item.this) - 1
            if not 0 <= position < len(tree.expressions):
                return None
            chosen = tree.expressions[position]
            item = chosen.this if isinstance(chosen, exp.Alias) else chosen
        if not isinstance(item, exp.Column) or not _ours(item, alias):
            return None
        name = item.name.lower()
        if name != _NODE_COLUMN and name not in common:
            return None
        keys.append(name)
    # A select-list alias of the same name as a key would make the GROUP BY ambiguous.
    aliases = {e.alias.lower() for e in tree.expressions if isinstance(e, exp.Alias)}
    if aliases & set(keys):
        same = [e for e in tree.expressions if isinstance(e, exp.Alias) and e.alias.lower() in keys]
        if any(
            not (isinstance(e.this, exp.Column) and e.this.name.lower() == e.alias.lower())
            for e in same
        ):
            return None
    return keys


def _ours(column: exp.Column, alias: str) -> bool:
    return not column.table or column.table.lower() == alias.lower()


def _split(
    aggregate: exp.Expr,
    index: int,
    alias: str,
    common: dict[str, pa.DataType],
    plan: PartialAggregation,
) -> exp.Expr | None:
    """Add the node-side states of one aggregate to `plan`; give the coordinator's merge."""
    argument = aggregate.this
    columns = list(argument.find_all(exp.Column)) if argument is not None else []
    for column in columns:
        if not _ours(column, alias) or column.name.lower() not in common:
            return None
        if column.name.lower() == _NODE_COLUMN:
            return None
    node_argument = _unqualified(argument) if argument is not None else None

    def state(name: str, node_aggregate: exp.Expr) -> exp.Expr:
        plan.partials.append((name, node_aggregate))
        return exp.column(name, quoted=True)

    if isinstance(aggregate, exp.Count):
        counted = state(f"__shoal_p{index}", exp.Count(this=node_argument or exp.Star()))
        return exp.cast(exp.Sum(this=counted), "BIGINT")
    if isinstance(aggregate, exp.Sum):
        return exp.Sum(this=state(f"__shoal_p{index}", exp.Sum(this=node_argument)))
    if isinstance(aggregate, exp.Min):
        return exp.Min(this=state(f"__shoal_p{index}", exp.Min(this=node_argument)))
    if isinstance(aggregate, exp.Max):
        return exp.Max(this=state(f"__shoal_p{index}", exp.Max(this=node_argument)))
    if isinstance(aggregate, exp.Avg):
        if node_argument is None or not columns:
            return None
        if not all(_numeric(common[c.name.lower()]) for c in columns):
            return None
        total = state(f"__shoal_p{index}s", exp.Sum(this=node_argument))
        count = state(f"__shoal_p{index}c", exp.Count(this=node_argument.copy()))
        numerator = exp.cast(exp.Sum(this=total), "DOUBLE")
        denominator = exp.Nullif(this=exp.Sum(this=count), expression=exp.Literal.number(0))
        return exp.Paren(this=exp.Div(this=numerator, expression=denominator))
    return None


def _numeric(dtype: pa.DataType) -> bool:
    return bool(pa.types.is_integer(dtype) or pa.types.is_floating(dtype))


def _unqualified(expression: exp.Expr) -> exp.Expr:
    copy = expression.copy()
    for column in copy.find_all(exp.Column):
        column.set("table", None)
    return copy
