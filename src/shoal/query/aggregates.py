"""Partial aggregation: each node groups and aggregates its own rows; the coordinator merges.

For a statement that aggregates one product (or a union of products under one name), each
node computes a partial state per group and the coordinator combines the states:

    aggregate                 node sends                coordinator
    COUNT(*), COUNT(x)        COUNT                     SUM of the counts, 0 if there is none
    SUM(x)                    SUM                       SUM of the sums
    MIN(x), MAX(x)            MIN / MAX                 MIN / MAX of those
    BOOL_AND(x), BOOL_OR(x)   BOOL_AND / BOOL_OR        BOOL_AND / BOOL_OR of those
    ANY_VALUE(x)              ANY_VALUE                 ANY_VALUE of those
    AVG(x)                    SUM, COUNT                SUM of sums / SUM of counts
    VAR_SAMP, VAR_POP,        n_i = COUNT, mean_i = AVG, M2 = SUM(M2_i) + SUM(n_i * (mean_i -
    VARIANCE, STDDEV_SAMP,    M2_i = VAR_POP * COUNT    mean)^2) (Chan et al.); M2 / (n - 1)
    STDDEV_POP, STDDEV                                  or M2 / n, NULL below 2 or 1; SQRT
    f(DISTINCT x)             groups by x as well       f(DISTINCT x) over the (keys, x) pairs
    f(...) FILTER (WHERE c)   each state with FILTER    the merge of f
    f(DISTINCT x) FILTER      COUNT(*) FILTER per x     f(DISTINCT x) FILTER (WHERE count > 0)

The variance's between-node term sums over the partial rows with the grand mean inside
(a lambda over the LIST of the rows' n_i and mean_i), so no two large sums of squares are
subtracted and values like 1e9 + noise keep their digits. DISTINCT changes nothing for
MIN, MAX, BOOL_AND, BOOL_OR and ANY_VALUE, so they ignore it.

Group keys may be plain columns, `_node` (or an expression of `_node` alone, which the
coordinator computes), or deterministic expressions a node can compute (what a pushed
filter may use, plus date_trunc, year, month, day, extract and date_part): the node sends
such a key under a generated name, and the coordinator groups by that column and reads it
wherever the statement repeats the expression. Keys may be named by position, by a
select-list alias, by GROUP BY ALL, or inside ROLLUP, CUBE or GROUPING SETS: the nodes
group by every key at full detail and the coordinator applies the grouping sets to the
merged rows (every state above is decomposable, so coarser groups merge finer ones).

Only statements where this cannot change an answer qualify: the outermost SELECT reads one
occurrence with no join, subquery or window; every WHERE conjunct runs at the nodes; every
column a node reads exists at every owner (a missing one would read as NULL there); every
aggregate is one of those above, without ORDER BY inside; all DISTINCT aggregates share
one argument; GROUPING() is not used; and what the coordinator still computes reads only
group keys, merged states and select-list aliases (no unknown function, which could be an
aggregate, and no alias named like a column where DuckDB might read either). Anything else
keeps the projection-and-filter split.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pyarrow as pa
import sqlglot
from sqlglot import exp

from shoal.engine import quote_identifier

__all__ = ["PartialAggregation", "plan_partial_aggregation"]

_DIALECT = "duckdb"
_NODE_COLUMN = "_node"
_PREFIX = "__shoal_"  # generated names; a product column with this prefix disables the split
_VARIANCES = (exp.Variance, exp.VariancePop, exp.Stddev, exp.StddevSamp, exp.StddevPop)
_DECOMPOSABLE = (
    exp.Count,
    exp.Sum,
    exp.Min,
    exp.Max,
    exp.Avg,
    exp.LogicalAnd,
    exp.LogicalOr,
    exp.AnyValue,
    *_VARIANCES,
)
# Their value over a set does not depend on repeats, so DISTINCT changes nothing.
_DISTINCT_IRRELEVANT = (exp.Min, exp.Max, exp.LogicalAnd, exp.LogicalOr, exp.AnyValue)
# Deterministic functions a group key may use besides what a pushed filter may.
_KEY_FUNCTIONS: tuple[type[exp.Expr], ...] = (
    exp.TimestampTrunc,
    exp.DateTrunc,
    exp.Year,
    exp.Month,
    exp.Day,
    exp.Extract,
)
_KEY_ANONYMOUS = {"date_part", "datepart"}


@dataclass
class PartialAggregation:
    keys: list[str]  # names of the group keys the nodes send (not `_node`)
    grouped: bool = False  # the statement has GROUP BY (perhaps only by `_node`)
    partials: list[tuple[str, exp.Expr]] = field(default_factory=list)  # alias, node aggregate
    combines: list[tuple[exp.Expr, exp.Expr]] = field(default_factory=list)  # tree node, merge
    # Keys that are expressions, by name: the nodes compute them under that name.
    key_expressions: dict[str, exp.Expr] = field(default_factory=dict)

    def select_list(self) -> list[str]:
        """The node's SELECT list: its group keys, then its partial states (DuckDB SQL)."""
        keys = [
            f"{self.key_expressions[k].sql(dialect=_DIALECT, identify=True)} AS "
            f"{quote_identifier(k)}"
            if k in self.key_expressions
            else quote_identifier(k)
            for k in self.keys
        ]
        states = [
            f"{p.sql(dialect=_DIALECT, identify=True)} AS {quote_identifier(name)}"
            for name, p in self.partials
        ]
        return keys + states

    def describe(self) -> str:
        states = ", ".join(p.sql(dialect=_DIALECT) for _, p in self.partials)
        names = [
            f"{self.key_expressions[k].sql(dialect=_DIALECT)} AS {k}"
            if k in self.key_expressions
            else k
            for k in self.keys
        ]
        keys = f"GROUP BY {', '.join(names)}" if names else ""
        return f"{keys}: {states}" if keys and states else keys or states


def plan_partial_aggregation(
    tree: exp.Expr,
    alias: str,
    schemas: list[pa.Schema],
    all_filters_pushed: bool,
    pushable: tuple[type[exp.Expr], ...],
) -> PartialAggregation | None:
    """The partial aggregation for `tree` over the occurrence `alias`, or None.

    `pushable` are the expression types a node may evaluate (those of pushed filters).
    """
    if not isinstance(tree, exp.Select) or not all_filters_pushed:
        return None
    for part in ("joins", "qualify", "distinct", "laterals", "pivots", "windows"):
        if tree.args.get(part):
            return None
    for node in tree.walk():
        if isinstance(node, exp.Subquery | exp.Window | exp.RespectNulls | exp.Columns):
            return None
        if isinstance(node, exp.Select) and node is not tree:
            return None
        if isinstance(node, exp.Star) and not isinstance(node.parent, exp.Count):
            return None
    aggregates = list(tree.find_all(exp.AggFunc))
    if not aggregates or not all(type(a) in _DECOMPOSABLE for a in aggregates):
        return None
    context = _Context(alias, schemas, pushable)
    if any(name.startswith(_PREFIX) for name in context.columns):
        return None
    targets = []
    for aggregate in aggregates:
        target = _target(aggregate)
        if target is None or target.find_ancestor(exp.AggFunc, exp.Filter) is not None:
            return None  # an aggregate inside another, or an unknown modifier
        targets.append(target)
    plan = PartialAggregation([], grouped=tree.args.get("group") is not None)
    keys = _Keys(context, plan)
    if not _group_keys(tree, keys):
        return None
    distinct_ok, distinct = _distinct_key(aggregates, keys)
    if not distinct_ok:
        return None
    for index, (aggregate, target) in enumerate(zip(aggregates, targets, strict=True)):
        condition = target.expression.this if isinstance(target, exp.Filter) else None
        merged = _split(aggregate, condition, index, context, plan, distinct)
        if merged is None:
            return None
        plan.combines.append((target, merged))
    replaced = _replace_keys(tree, keys, {id(t) for t in targets})
    plan.combines += replaced
    skip = {id(t) for t in targets} | {id(node) for node, _ in replaced}
    if not _coordinator_reads_only_keys(tree, keys, skip, [node for node, _ in replaced]):
        return None
    return plan


class _Context:
    """What the planner knows about the occurrence."""

    def __init__(
        self, alias: str, schemas: list[pa.Schema], pushable: tuple[type[exp.Expr], ...]
    ) -> None:
        self.alias = alias
        self.pushable = pushable
        first, *rest = schemas
        # Columns every product under the name has (with their type): the nodes read only
        # those, since a missing one would read as NULL at that owner.
        common = {f.name.lower(): f.type for f in first}
        for schema in rest:
            common = {n: t for n, t in common.items() if n in {f.name.lower() for f in schema}}
        self.common = common
        self.columns = {f.name.lower() for schema in schemas for f in schema}

    def ours(self, column: exp.Column) -> bool:
        if column.args.get("db") or column.args.get("catalog"):
            return False
        return not column.table or column.table.lower() == self.alias.lower()

    def node_readable(self, expression: exp.Expr) -> bool:
        """Whether a node can compute `expression`: every column is this occurrence's, every
        owner has it, and it is not the `_node` the coordinator adds."""
        return all(
            self.ours(c) and c.name.lower() in self.common and c.name.lower() != _NODE_COLUMN
            for c in expression.find_all(exp.Column)
        )

    def deterministic(self, expression: exp.Expr, extra: tuple[type[exp.Expr], ...] = ()) -> bool:
        allowed = self.pushable + extra
        for node in expression.walk():
            if isinstance(node, exp.Anonymous) and extra and node.name.lower() in _KEY_ANONYMOUS:
                continue
            if not isinstance(node, allowed):
                return False
        return True


class _Keys:
    """The group keys the nodes send, each once, by canonical form."""

    def __init__(self, context: _Context, plan: PartialAggregation) -> None:
        self.context = context
        self.plan = plan
        self.known: list[tuple[exp.Expr, str]] = []  # canonical form, name
        # Keys the coordinator groups by (not the DISTINCT argument, which only the nodes
        # group by): it may read these, and only these, outside the merges.
        self.columns: set[str] = set()  # plain columns
        self.expressions: set[str] = set()  # expressions, by name

    def add(self, expression: exp.Expr, node_only: bool = False) -> str | None:
        """The name of the key computing `expression` (added if new); "" for a key the
        coordinator computes from `_node`; None if the nodes cannot group by it."""
        canonical = _canonical(expression)
        columns = list(canonical.find_all(exp.Column))
        if not columns or not all(self.context.ours(c) for c in expression.find_all(exp.Column)):
            return None
        names = {c.name.lower() for c in columns}
        if _NODE_COLUMN in names:
            # The union adds `_node`, so the coordinator groups by it itself.
            return "" if names == {_NODE_COLUMN} and not node_only else None
        if not self.context.node_readable(canonical):
            return None
        name = next((name for known, name in self.known if known == canonical), None)
        if name is None:
            if isinstance(canonical, exp.Column):
                name = canonical.name.lower()
            elif self.context.deterministic(canonical, _KEY_FUNCTIONS):
                name = f"{_PREFIX}k{len(self.known)}"
                self.plan.key_expressions[name] = _unqualified(expression)
            else:
                return None
            self.known.append((canonical, name))
            self.plan.keys.append(name)
        if not node_only:
            grouped = self.expressions if name in self.plan.key_expressions else self.columns
            grouped.add(name)
        return name

    def expression_named(self, canonical: exp.Expr) -> str | None:
        """The name of the grouped key expression equal to `canonical`, if any."""
        for known, name in self.known:
            if name in self.expressions and known == canonical:
                return name
        return None


def _target(aggregate: exp.Expr) -> exp.Expr | None:
    """The tree node the merge replaces: the aggregate with its IGNORE NULLS and FILTER."""
    target = aggregate
    if isinstance(target.parent, exp.IgnoreNulls):
        if not isinstance(aggregate, exp.AnyValue):
            return None
        target = target.parent
    if isinstance(target.parent, exp.Filter):
        target = target.parent
    return target


def _group_keys(tree: exp.Select, keys: _Keys) -> bool:
    """Register every group key of `tree`; False if one cannot be computed at the nodes."""
    group = tree.args.get("group")
    if group is None:
        return True
    if group.args.get("all"):
        for item in tree.expressions:
            expression = item.this if isinstance(item, exp.Alias) else item
            if expression.find(exp.AggFunc) or not expression.find(exp.Column):
                continue  # an aggregate, or a constant both sides' GROUP BY ALL treat alike
            if keys.add(expression) is None:
                return False
        return True
    return all(_group_item(item, tree, keys, top=True) for item in group.iter_expressions())


def _group_item(item: exp.Expr, tree: exp.Select, keys: _Keys, top: bool) -> bool:
    if isinstance(item, exp.Rollup | exp.Cube | exp.GroupingSets | exp.Tuple):
        return all(_group_item(e, tree, keys, top=False) for e in item.expressions)
    if isinstance(item, exp.Paren):
        return _group_item(item.this, tree, keys, top=False)
    if isinstance(item, exp.Literal) and item.is_int:
        position = int(item.this) - 1
        if not top or not 0 <= position < len(tree.expressions):
            return False
        chosen = tree.expressions[position]
        item = chosen.this if isinstance(chosen, exp.Alias) else chosen
    elif (
        isinstance(item, exp.Column)
        and not item.table
        and item.name.lower() not in keys.context.columns
        and item.name.lower() != _NODE_COLUMN
    ):
        # Not a column of the product: DuckDB reads it as a select-list alias.
        chosen_alias = next(
            (
                e
                for e in tree.expressions
                if isinstance(e, exp.Alias) and e.alias.lower() == item.name.lower()
            ),
            None,
        )
        if chosen_alias is None:
            return False
        item = chosen_alias.this
    if item.find(exp.AggFunc):
        return False
    return keys.add(item) is not None


def _distinct_key(aggregates: list[exp.AggFunc], keys: _Keys) -> tuple[bool, str | None]:
    """Whether the DISTINCT aggregates can be split, and the name of the key that carries
    their one argument (None if there are none)."""
    arguments = [
        a.this.expressions
        for a in aggregates
        if isinstance(a.this, exp.Distinct) and type(a) not in _DISTINCT_IRRELEVANT
    ]
    if not arguments:
        return True, None
    if any(len(a) != 1 for a in arguments):
        return False, None
    first = _canonical(arguments[0][0])
    if any(_canonical(a[0]) != first for a in arguments[1:]):
        return False, None  # two DISTINCT arguments would need two sets of pairs
    name = keys.add(arguments[0][0], node_only=True)
    return bool(name), name or None


def _split(
    aggregate: exp.AggFunc,
    condition: exp.Expr | None,
    index: int,
    context: _Context,
    plan: PartialAggregation,
    distinct: str | None,
) -> exp.Expr | None:
    """Add the node-side states of one aggregate to `plan`; give the coordinator's merge."""
    if aggregate.find(exp.Order, exp.Limit):
        return None  # `f(x ORDER BY y)`: which row comes first is not known at a node
    argument = aggregate.this
    is_distinct = isinstance(argument, exp.Distinct)
    if is_distinct:
        if len(argument.expressions) != 1:
            return None
        argument = argument.expressions[0]
        is_distinct = type(aggregate) not in _DISTINCT_IRRELEVANT
    if argument is not None and not context.node_readable(argument):
        return None
    if condition is not None and not (
        context.node_readable(condition) and context.deterministic(condition)
    ):
        return None
    node_argument = _unqualified(argument) if argument is not None else None
    node_condition = _unqualified(condition) if condition is not None else None

    def state(suffix: str, node_aggregate: exp.Expr) -> exp.Column:
        if node_condition is not None:
            node_aggregate = _with_filter(node_aggregate, node_condition)
        text = node_aggregate.sql(dialect=_DIALECT)
        for name, known in plan.partials:
            if known.sql(dialect=_DIALECT) == text:  # the same state twice is sent once
                return exp.column(name, quoted=True)
        name = f"{_PREFIX}p{index}{suffix}"
        plan.partials.append((name, node_aggregate))
        return exp.column(name, quoted=True)

    if is_distinct:
        # The nodes group by the argument too; a (keys, x) whose rows the FILTER removes
        # everywhere must not count, so each sends how many of its rows pass.
        assert distinct is not None
        merged = type(aggregate)(this=exp.Distinct(expressions=[exp.column(distinct, quoted=True)]))
        if isinstance(aggregate, exp.Count):
            merged.set("big_int", True)
        if node_condition is None:
            return merged
        passing = state("f", exp.Count(this=exp.Star(), big_int=True))
        return _with_filter(merged, exp.GT(this=passing, expression=exp.Literal.number(0)))
    columns = list(argument.find_all(exp.Column)) if argument is not None else []
    numeric = bool(columns) and all(_numeric(context.common[c.name.lower()]) for c in columns)
    if isinstance(aggregate, exp.Count):
        counted = state("", exp.Count(this=node_argument or exp.Star(), big_int=True))
        # No partial row for a group (an empty grouping set) is a count of 0, not NULL.
        return exp.func("COALESCE", exp.cast(exp.Sum(this=counted), "BIGINT"), 0)
    if node_argument is None:
        return None
    simple: dict[type[exp.Expr], type[exp.Func]] = {
        exp.Sum: exp.Sum,
        exp.Min: exp.Min,
        exp.Max: exp.Max,
        exp.LogicalAnd: exp.LogicalAnd,
        exp.LogicalOr: exp.LogicalOr,
        exp.AnyValue: exp.AnyValue,
    }
    kind = simple.get(type(aggregate))
    if kind is not None:
        return kind(this=state("", kind(this=node_argument)))
    if not numeric:
        return None
    if isinstance(aggregate, exp.Avg):
        total = state("s", exp.Sum(this=node_argument))
        count = state("c", exp.Count(this=node_argument.copy(), big_int=True))
        numerator = exp.cast(exp.Sum(this=total), "DOUBLE")
        denominator = exp.Nullif(this=exp.Sum(this=count), expression=exp.Literal.number(0))
        return exp.Paren(this=exp.Div(this=numerator, expression=denominator))
    if isinstance(aggregate, _VARIANCES):
        count = state("c", exp.Count(this=node_argument, big_int=True))
        mean = state("m", exp.Avg(this=node_argument.copy()))
        spread = state(
            "q",
            exp.Mul(
                this=exp.VariancePop(this=node_argument.copy()),
                expression=exp.Count(this=node_argument.copy(), big_int=True),
            ),
        )
        return _variance_merge(aggregate, count, mean, spread)
    return None


def _variance_merge(
    aggregate: exp.AggFunc, count: exp.Column, mean: exp.Column, spread: exp.Column
) -> exp.Expr:
    """Chan et al.'s parallel variance over the partial rows (count n_i, mean_i, M2_i)."""
    n, mu, m2 = (c.sql(dialect=_DIALECT, identify=True) for c in (count, mean, spread))
    total = f"CAST(SUM({n}) AS DOUBLE)"
    grand_mean = f"SUM({n} * {mu}) / {total}"
    rows = f"LIST({{'n': {n}, 'mean': {mu}}}) FILTER (WHERE {n} > 0)"
    between = (
        f"COALESCE(LIST_SUM(LIST_TRANSFORM({rows}, lambda {_PREFIX}r: "
        f"{_PREFIX}r.n * POWER({_PREFIX}r.mean - {grand_mean}, 2))), 0)"
    )
    squares = f"(SUM({m2}) + {between})"
    if isinstance(aggregate, exp.VariancePop | exp.StddevPop):
        variance = f"CASE WHEN {total} > 0 THEN {squares} / {total} END"
    else:  # VAR_SAMP, VARIANCE, STDDEV_SAMP, STDDEV
        variance = f"CASE WHEN {total} > 1 THEN {squares} / ({total} - 1) END"
    if isinstance(aggregate, exp.Stddev | exp.StddevSamp | exp.StddevPop):
        variance = f"SQRT({variance})"
    return exp.Paren(this=sqlglot.parse_one(variance, read=_DIALECT))


def _replace_keys(tree: exp.Select, keys: _Keys, skip: set[int]) -> list[tuple[exp.Expr, exp.Expr]]:
    """Each place the coordinator's part repeats a key expression, and its key column."""
    replaced: list[tuple[exp.Expr, exp.Expr]] = []
    if not keys.expressions:
        return replaced

    def visit(node: exp.Expr) -> None:
        if id(node) in skip:
            return
        if not isinstance(node, exp.Column | exp.Literal | exp.Identifier):
            name = keys.expression_named(_canonical(node))
            if name is not None:
                replaced.append((node, exp.column(name, quoted=True)))
                return
        for child in node.iter_expressions():
            visit(child)

    for part in _coordinator_parts(tree):
        visit(part)
    return replaced


def _coordinator_parts(tree: exp.Select) -> list[exp.Expr]:
    parts: list[exp.Expr] = list(tree.expressions)
    parts += [tree.args[k] for k in ("group", "having", "order") if tree.args.get(k)]
    return parts


def _coordinator_reads_only_keys(
    tree: exp.Select, keys: _Keys, skip: set[int], replaced: list[exp.Expr]
) -> bool:
    """Whether what the coordinator still evaluates reads only what the partial rows have:
    key columns, `_node` and select-list aliases, and calls no function that may be an
    aggregate sqlglot does not know (it would aggregate partial rows, not rows)."""
    # A select-list alias with a column's name: DuckDB reads the name as one or the other
    # depending on where it stands. Where a node would read the column instead (a group key,
    # an expression sent as one), the answer could change.
    shadowing = {
        e.alias.lower()
        for e in tree.expressions
        if isinstance(e, exp.Alias)
        and e.alias.lower() in keys.context.columns
        and _canonical(e.this) != _canonical(exp.column(e.alias))
    }
    group = tree.args.get("group")
    near_keys = [*replaced, *([group] if group is not None else [])]
    if shadowing & keys.columns or any(
        c.name.lower() in shadowing for node in near_keys for c in node.find_all(exp.Column)
    ):
        return False
    for part in _coordinator_parts(tree):
        for node in _outside(part, skip):
            if isinstance(node, exp.Anonymous) and node.name.lower() not in _KEY_ANONYMOUS:
                return False
            if not isinstance(node, exp.Column):
                continue
            if not keys.context.ours(node):
                return False
            name = node.name.lower()
            if name == _NODE_COLUMN or name in keys.columns:
                continue
            if not node.table and (name not in keys.context.columns or name in shadowing):
                continue  # a select-list alias: the partial rows have no such column
            return False
    return True


def _outside(node: exp.Expr, skip: set[int]) -> Iterator[exp.Expr]:
    """`node` and its descendants, leaving out the subtrees whose roots are in `skip`."""
    if id(node) in skip:
        return
    yield node
    for child in node.iter_expressions():
        yield from _outside(child, skip)


def _canonical(expression: exp.Expr) -> exp.Expr:
    """`expression` without parentheses, table qualifiers or identifier case, to compare."""
    copy = _unqualified(expression)
    while isinstance(copy, exp.Paren):
        copy = copy.this
    for paren in list(copy.find_all(exp.Paren)):
        paren.replace(paren.this)
    for column in copy.find_all(exp.Column):
        column.set("this", exp.to_identifier(column.name.lower()))
    return copy


def _with_filter(state: exp.Expr, condition: exp.Expr) -> exp.Expr:
    """`state` with every aggregate in it under FILTER (WHERE condition)."""
    if isinstance(state, exp.AggFunc):
        return exp.Filter(this=state, expression=exp.Where(this=condition.copy()))
    for aggregate in list(state.find_all(exp.AggFunc)):
        aggregate.replace(_with_filter(aggregate.copy(), condition))
    return state


def _numeric(dtype: pa.DataType) -> bool:
    return bool(pa.types.is_integer(dtype) or pa.types.is_floating(dtype))


def _unqualified(expression: exp.Expr) -> exp.Expr:
    copy = expression.copy()
    for column in copy.find_all(exp.Column):
        column.set("table", None)
    return copy
