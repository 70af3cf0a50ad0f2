"""Splitting one SQL statement into per-node fragments and the coordinator's finishing SQL.

The statement is parsed once with sqlglot (DuckDB dialect). Every occurrence of a product
in it — in the main query, a subquery, a CTE body, each side of a self-join — becomes its
own fragments: `berlin.sales` is one fragment at berlin, a plain `sales` one fragment per
node that owns a `sales`, unioned by column name at the coordinator with a `_node` column.
The occurrence is replaced in the tree by the fragment results, and the coordinator runs
the rewritten statement.

What a fragment carries is decided in one place, `_push_down`:

* **projection** — only the columns the statement names (all of them when it uses `*`,
  `COLUMNS(...)` or a NATURAL join); a name is kept if it appears anywhere in the
  statement, so a reference the planner does not understand can only fetch too much, never
  too little;
* **filters** — WHERE conjuncts that read only this occurrence, are built only from
  deterministic, side-effect-free expressions (comparisons, IN lists, BETWEEN, LIKE, IS
  NULL, arithmetic, casts, a few string functions), and apply where pushing cannot change
  the answer: never on the null-supplying side of an outer join, never HAVING.

Pushed filters are also kept in the coordinator's SQL: re-applying a deterministic filter
changes nothing, so correctness never depends on the pushdown. The next issue adds partial
aggregates, top-N and co-located joins in `_push_down`.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import pyarrow as pa
import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, SqlglotError
from sqlglot.optimizer.scope import Scope, traverse_scope

from shoal.engine import (
    LockedSession,
    quote_identifier,
    read_only_statement,
    trusted_connection,
)
from shoal.errors import LockdownError, NotFoundError, UsageError
from shoal.query.aggregates import PartialAggregation, plan_partial_aggregation
from shoal.query.bounds import excludes
from shoal.query.joins import JoinSide, broadcast_shape
from shoal.query.plan import Fragment, QueryPlan, TableRef

__all__ = ["NODE_COLUMN", "plan_query"]

# sqlglot warns on stderr when it falls back to an opaque Command (EXPLAIN, PRAGMA ...);
# the planner refuses those itself with a clear message, so the warning is only noise.
logging.getLogger("sqlglot").setLevel(logging.ERROR)

NODE_COLUMN = "_node"
MAX_SQL_CHARS = 1024 * 1024
_DIALECT = "duckdb"
_ROW_MARKER = "__shoal_row"
_JOINED = "__shoal_j"  # the alias of a broadcast join's rows at the coordinator

# Expressions a filter may be built from to be pushed: deterministic and free of side
# effects, so running them at the node and again at the coordinator gives one answer.
_PUSHABLE = (
    exp.Column,
    exp.Identifier,
    exp.Literal,
    exp.Boolean,
    exp.Null,
    exp.Paren,
    exp.And,
    exp.Or,
    exp.Not,
    exp.EQ,
    exp.NEQ,
    exp.GT,
    exp.GTE,
    exp.LT,
    exp.LTE,
    exp.NullSafeEQ,
    exp.NullSafeNEQ,
    exp.In,
    exp.Between,
    exp.Like,
    exp.ILike,
    exp.Is,
    exp.Neg,
    exp.Add,
    exp.Sub,
    exp.Mul,
    exp.Div,
    exp.Mod,
    exp.Cast,
    exp.TryCast,
    exp.DataType,
    exp.DataTypeParam,
    exp.Interval,
    exp.Var,
    exp.Tuple,
    exp.Lower,
    exp.Upper,
    exp.Length,
    exp.Coalesce,
    exp.Abs,
    exp.StartsWith,
    exp.Substring,
    exp.Trim,
)


@dataclass
class _Occurrence:
    """One place a product name appears in the statement."""

    table: exp.Table
    alias: str
    refs: list[TableRef]
    qualified: bool
    # The union's columns over every owner, kept when pruning drops owners: the statement
    # was bound against all of them.
    columns: list[tuple[str, pa.DataType]] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.columns:
            self.columns = _union_columns(self.refs)


def plan_query(sql: str, tables: Sequence[TableRef]) -> QueryPlan:
    """Split `sql` over the products in `tables` (the mesh catalog)."""
    tree = _parse(sql)
    catalog = _Catalog(tables)
    occurrences: list[_Occurrence] = []
    nullable: dict[int, bool] = {}
    where_of: dict[int, exp.Expr | None] = {}
    sources_of: dict[int, int] = {}
    select_aliases: dict[int, set[str]] = {}
    top_of: dict[int, bool] = {}  # the occurrence is the whole FROM of the outermost SELECT
    scope_of: dict[int, exp.Expr] = {}  # the SELECT whose FROM the occurrence is in
    for scope in _scopes(tree):
        select = scope.expression
        outer = _outer_joined(select) if isinstance(select, exp.Select) else set()
        aliases = _select_aliases(select)
        # `sources`, not `selected_sources`: the right side of a SEMI or ANTI join is a
        # source whose columns the SELECT cannot see.
        for alias, source in scope.sources.items():
            if not isinstance(source, exp.Table) or not isinstance(source.this, exp.Identifier):
                continue  # a CTE, a subquery or a table function: not a product
            occurrence = catalog.resolve(source, alias)
            key = id(source)
            occurrences.append(occurrence)
            nullable[key] = alias in outer
            where_of[key] = select.args.get("where") if isinstance(select, exp.Select) else None
            sources_of[key] = len(scope.sources)
            select_aliases[key] = aliases
            top_of[key] = select is tree
            scope_of[key] = select
    columns = _output_columns(sql, occurrences)
    volatile = _volatile(tree)
    colocated = _colocated(sql, tree, occurrences, columns, volatile)
    if colocated is not None:
        return colocated
    broadcast = _broadcast(sql, tree, occurrences, columns)
    if broadcast is not None:
        return broadcast
    names_used, wants_everything = _names_used(tree)
    reducers = _semi_joins(occurrences, scope_of, where_of, nullable, select_aliases)
    fragments: list[Fragment] = []
    notes: list[str] = []
    for occurrence in occurrences:
        key = id(occurrence.table)
        filters = []
        if nullable[key]:
            notes.append(
                f"filters on {occurrence.alias} stay at the coordinator: it is on the "
                "null-supplying side of an outer join"
            )
        else:
            filters = _pushable_conjuncts(
                where_of[key], occurrence.alias, sources_of[key] == 1, select_aliases[key]
            )
        kept = [ref for ref in occurrence.refs if not _cannot_match(ref, filters)]
        if len(kept) < len(occurrence.refs):
            skipped = [r.owner for r in occurrence.refs if r not in kept]
            notes.append(
                f"{occurrence.alias}: not asked: {', '.join(skipped)} (their rows cannot pass "
                "the filters, by the catalog's column bounds)"
            )
            occurrence.refs = kept or occurrence.refs[:1]
        top_n = None
        if top_of[key] and sources_of[key] == 1 and not nullable[key]:
            partial = plan_partial_aggregation(
                tree,
                occurrence.alias,
                [ref.schema for ref in occurrence.refs],
                _runs_every_filter(where_of[key], filters, occurrence),
                _PUSHABLE,
            )
            if partial is not None:
                pays, why = _grouping_pays(partial, occurrence.refs)
                if why:
                    notes.append(f"{occurrence.alias}: {why}")
                if not pays:
                    partial = None
            if partial is not None:
                replacement, made = _aggregate_fragments(
                    occurrence, filters, partial, len(fragments)
                )
                fragments += made
                occurrence.table.replace(replacement)
                for aggregate, merged in partial.combines:
                    aggregate.replace(merged)
                # Every conjunct ran at every node, and the partial states no longer carry
                # the columns it reads.
                tree.set("where", None)
                continue
            top_n = _top_n(tree, occurrence, filters)
        replacement, made = _push_down(
            occurrence,
            filters,
            names_used,
            wants_everything,
            len(fragments),
            top_n,
            reducers.get(key, []),
        )
        fragments += made
        occurrence.table.replace(replacement)
    final_sql = tree.sql(dialect=_DIALECT, identify=True)
    return QueryPlan(sql, tuple(fragments), final_sql, tuple(notes), tuple(columns), volatile)


# Functions whose value changes between runs: a statement calling one is never cached.
_VOLATILE = (
    exp.Rand,
    exp.Randn,
    exp.Randstr,
    exp.Uuid,
    exp.CurrentDate,
    exp.CurrentTime,
    exp.CurrentTimestamp,
    exp.CurrentDatetime,
    exp.CurrentTimestampLTZ,
    exp.NextValueFor,
)
_VOLATILE_NAMES = {
    "now",
    "random",
    "setseed",
    "nextval",
    "currval",
    "uuid",
    "gen_random_uuid",
    "transaction_timestamp",
    "get_current_timestamp",
    "get_current_time",
    "current_localtime",
    "current_localtimestamp",
    "localtime",
    "localtimestamp",
    "today",
    "current_setting",
    "current_query",
    "txid_current",
}


def _volatile(tree: exp.Expr) -> bool:
    """Whether the statement calls a function whose value changes between runs."""
    for node in tree.walk():
        if isinstance(node, _VOLATILE):
            return True
        if isinstance(node, exp.Anonymous) and node.name.lower() in _VOLATILE_NAMES:
            return True
    return False


# -- parsing and the gate -----------------------------------------------------------------
def _parse(sql: str) -> exp.Expr:
    if not isinstance(sql, str) or not sql.strip():
        raise UsageError("the query is empty")
    if len(sql) > MAX_SQL_CHARS:
        raise UsageError("the query is longer than 1 MiB")
    read_only_statement(sql)
    try:
        statements = [s for s in sqlglot.parse(sql, read=_DIALECT) if s is not None]
    except ParseError as exc:
        first = exc.errors[0]["description"] if exc.errors else str(exc)
        raise UsageError(f"SQL error: {first}") from exc
    except (SqlglotError, RecursionError) as exc:
        raise UsageError(f"SQL error: cannot parse the query: {type(exc).__name__}") from exc
    if len(statements) != 1:
        raise LockdownError(f"exactly one SQL statement per call is allowed; got {len(statements)}")
    tree = statements[0]
    if (isinstance(tree, exp.Command) and str(tree.this).upper() == "EXPLAIN") or isinstance(
        tree, exp.Describe
    ):
        raise UsageError(
            "EXPLAIN shows one node's plan; for the plan over the mesh use `shoal explain`"
            " or POST /api/v1/explain"
        )
    if not isinstance(tree, exp.Query):
        kind = type(tree).__name__.upper()
        raise LockdownError(f"{kind} statements are not allowed; only one read-only SELECT")
    return tree


def _scopes(tree: exp.Expr) -> list[Scope]:
    try:
        return list(traverse_scope(tree))
    except (SqlglotError, RecursionError) as exc:
        raise UsageError(f"SQL error: cannot resolve the query's tables: {exc}") from exc


# -- names ------------------------------------------------------------------------------
class _Catalog:
    def __init__(self, tables: Sequence[TableRef]) -> None:
        self.by_name: dict[str, list[TableRef]] = {}
        self.by_owner: dict[tuple[str, str], TableRef] = {}
        for table in sorted(tables, key=lambda t: (t.product, t.owner)):
            self.by_name.setdefault(table.product.lower(), []).append(table)
            self.by_owner[table.owner.lower(), table.product.lower()] = table

    def resolve(self, table: exp.Table, alias: str) -> _Occurrence:
        if table.catalog:
            raise NotFoundError(
                f"no product {table.sql(dialect=_DIALECT)}: products are NODE.PRODUCT or PRODUCT"
            )
        product = table.name.lower()
        owner = table.db.lower()
        if owner:
            found = self.by_owner.get((owner, product))
            if found is None:
                raise self._not_found(f"{owner}.{product}")
            return _Occurrence(table, alias or table.name, [found], qualified=True)
        refs = self.by_name.get(product)
        if not refs:
            raise self._not_found(product)
        _check_compatible(product, refs)
        return _Occurrence(table, alias or table.name, refs, qualified=False)

    def _not_found(self, name: str) -> NotFoundError:
        known = sorted(set(self.by_name) | {f"{o}.{p}" for o, p in self.by_owner})
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
        hint = (
            f"did you mean {', '.join(close)}?" if close else "`shoal products --mesh` lists them"
        )
        return NotFoundError(f"no product '{name}' in the mesh", hint=hint)


def _check_compatible(product: str, refs: list[TableRef]) -> None:
    """Products unioned under one name must agree on each shared column's type."""
    seen: dict[str, tuple[pa.DataType, str]] = {}
    for ref in refs:
        for field in ref.schema:
            name = field.name.lower()
            if name == NODE_COLUMN:
                raise UsageError(f"{ref.name} has a column named {NODE_COLUMN}, which Shoal adds")
            if name in seen and seen[name][0] != field.type:
                other_type, other = seen[name]
                raise UsageError(
                    f"'{product}' cannot be unioned: column {field.name} is {other_type} in "
                    f"{other} but {field.type} in {ref.name}",
                    hint=f"name one product ({other} or {ref.name}) or align the contracts",
                )
            seen.setdefault(name, (field.type, ref.name))


def _names_used(tree: exp.Expr) -> tuple[set[str], bool]:
    """Every identifier the statement names, and whether it may need every column."""
    names: set[str] = set()
    everything = False
    for node in tree.walk():
        if isinstance(node, exp.Identifier):
            names.add(node.name.lower())
        elif (
            (isinstance(node, exp.Star) and not isinstance(node.parent, exp.Count))
            or isinstance(node, exp.Columns)
            or (isinstance(node, exp.Join) and node.args.get("kind", "").upper() == "NATURAL")
            or (isinstance(node, exp.Anonymous) and node.name.lower() == "columns")
        ):
            everything = True
    return names, everything


def _select_aliases(select: exp.Expr) -> set[str]:
    if not isinstance(select, exp.Select):
        return set()
    return {e.alias.lower() for e in select.expressions if isinstance(e, exp.Alias)}


def _outer_joined(select: exp.Select) -> set[str]:
    """Aliases of sources that an outer join may fill with NULLs in this SELECT."""
    source = select.args.get("from_") or select.args.get("from")  # renamed in sqlglot 30
    seen: list[str] = [source.this.alias_or_name] if source is not None else []
    nullable: set[str] = set()
    for join in select.args.get("joins") or []:
        name = join.this.alias_or_name
        side = (join.side or "").upper()
        if side in ("LEFT", "FULL"):
            nullable.add(name)
        if side in ("RIGHT", "FULL"):
            nullable.update(seen)
        seen.append(name)
    return nullable


def _output_columns(sql: str, occurrences: list[_Occurrence]) -> list[str]:
    """The result's column names as DuckDB names them for the statement as written.

    The coordinator runs a rewritten statement, and DuckDB names an unaliased expression
    by its text, so the names are taken by binding the original (never running it) over
    empty tables of the right shapes, in a locked-down session. Binding also reports
    mistakes (an unknown column, a wrong type) before any node is asked.
    """
    shapes: dict[tuple[str, str], pa.Table] = {}
    for occurrence in occurrences:
        if occurrence.qualified:
            ref = occurrence.refs[0]
            shapes[ref.owner, ref.product] = ref.schema.empty_table()
        else:
            fields = [pa.field(n, t) for n, t in _union_columns(occurrence.refs)]
            fields.append(pa.field(NODE_COLUMN, pa.string()))
            shapes["main", occurrence.refs[0].product] = pa.schema(fields).empty_table()
    with LockedSession(memory_limit="256MB", threads=1) as session:
        session.expose(shapes, aliases=False)
        session.lock()
        return session.columns(sql)


# -- co-location ---------------------------------------------------------------------------
def _colocated(
    sql: str, tree: exp.Expr, occurrences: list[_Occurrence], columns: list[str], volatile: bool
) -> QueryPlan | None:
    """The whole statement as one fragment, when every product it reads lives on one node.

    Joins, subqueries, CTEs, windows and aggregates then all run where the data is, and
    only the answer moves. A plain name counts when one node owns a product of that name;
    its `_node` column is added at the node. The node returns the result's columns under
    positional names (the statement may repeat a name), and the coordinator reads them back
    in order.
    """
    if not occurrences or any(len(o.refs) != 1 for o in occurrences):
        return None
    refs = {(o.refs[0].owner, o.refs[0].product): o.refs[0] for o in occurrences}
    owners = {owner for owner, _ in refs}
    if len(owners) != 1:
        return None
    holders = _common_holders(list(refs.values()))
    if not holders:
        return None
    first, *others = sorted(refs.values(), key=lambda r: r.product)
    for occurrence in occurrences:
        if occurrence.qualified:
            continue
        ref = occurrence.refs[0]
        body = sqlglot.parse_one(
            f"SELECT *, {_literal(ref.owner)} AS {_quoted(NODE_COLUMN)} "
            f"FROM {_quoted(ref.owner)}.{_quoted(ref.product)}",
            read=_DIALECT,
        )
        occurrence.table.replace(
            exp.Subquery(
                this=body,
                alias=exp.TableAlias(this=exp.to_identifier(occurrence.alias, quoted=True)),
            )
        )
    positional = [f"__shoal_c{index}" for index in range(len(columns))]
    inner = tree.sql(dialect=_DIALECT, identify=True)
    fragment_sql = (
        f"SELECT * FROM ({inner}) AS {_quoted('__shoal_q')}"
        f"({', '.join(_quoted(name) for name in positional)})"
    )
    fragment = Fragment(
        id="__shoal_f0",
        owner=first.owner,
        product=first.product,
        holders=holders,
        sql=fragment_sql,
        columns=tuple(positional),
        filters=(),
        version=first.version,
        also=tuple((ref.product, ref.version) for ref in others),
        pushed="the whole statement (every product it reads lives on this node)",
        volatile=volatile,
        # Older copies may answer a statement over one product; several products must be
        # read at the versions the plan saw, which only holders of all of them have.
        fallbacks=() if others else first.fallbacks,
    )
    final_sql = (
        f"SELECT {', '.join(_quoted(name) for name in positional)} FROM {_quoted(fragment.id)}"
    )
    return QueryPlan(sql, (fragment,), final_sql, (), tuple(columns), volatile)


def _common_holders(refs: list[TableRef]) -> tuple[str, ...]:
    """Nodes that hold every one of `refs`, in the first one's order of preference."""
    first, *rest = [tuple(ref.holders or (ref.owner,)) for ref in refs]
    return tuple(node for node in first if all(node in other for other in rest))


# -- pruning whole nodes ------------------------------------------------------------------
def _cannot_match(ref: TableRef, filters: list[exp.Expr]) -> bool:
    """Whether no row of `ref` can pass `filters`, by its integer columns' [min, max]."""
    if ref.rows == 0:
        return True  # an empty product adds no row to any answer
    if not ref.bounds:
        return False
    return any(excludes(conjunct, ref.bounds) for conjunct in filters)


# -- semi-join reduction ------------------------------------------------------------------
# Join keys a reducing side may send to the other side's nodes: beyond this many rows in
# the reducing product, fetching its keys could cost more than it saves.
SEMI_JOIN_MAX_ROWS = 1_000_000


@dataclass(frozen=True)
class _SemiJoin:
    """Rows of this occurrence whose `column` is not among the filtered other side's join
    keys cannot be in an inner join's result, so the node drops them before sending."""

    column: str  # this side's join column (lower case)
    key: str  # the other side's join column, as its schema spells it
    inputs: tuple[Fragment, ...]  # the other side's distinct, filtered keys, per owner

    def condition(self) -> str:
        keys = " UNION ALL ".join(
            f"SELECT {_quoted(self.key)} FROM {_quoted(f.id)}" for f in self.inputs
        )
        return f"({_quoted(self.column)} IN ({keys}))"

    def describe(self) -> str:
        where = ", ".join(f"{f.owner}.{f.product}" for f in self.inputs)
        return f"semi-join: only rows whose {self.column} is a filtered join key of {where}"


def _semi_joins(
    occurrences: list[_Occurrence],
    scope_of: dict[int, exp.Expr],
    where_of: dict[int, exp.Expr | None],
    nullable: dict[int, bool],
    select_aliases: dict[int, set[str]],
) -> dict[int, list[_SemiJoin]]:
    """Semi-join reductions per occurrence: for an inner equi-join where the other side has
    a filter of its own, the other side's filtered keys go to this side's nodes as an IN
    filter. Reductions only ever remove rows no join result can use."""
    found: dict[int, list[_SemiJoin]] = {}
    shipped = 0
    for occurrence in occurrences:
        key = id(occurrence.table)
        select = scope_of[key]
        if nullable[key] or not isinstance(select, exp.Select) or not _inner_only(select):
            continue
        peers = {
            o.alias.lower(): o
            for o in occurrences
            if scope_of[id(o.table)] is select and o is not occurrence
        }
        for mine, theirs, other_alias in _equi_pairs(select, occurrence.alias, set(peers)):
            other = peers[other_alias]
            other_key = id(other.table)
            filters = _pushable_conjuncts(
                where_of[other_key], other.alias, False, select_aliases[other_key]
            )
            rows = [r.rows for r in other.refs]
            if not filters or any(r is None or r > SEMI_JOIN_MAX_ROWS for r in rows):
                continue
            if not all(theirs in {f.name.lower() for f in r.schema} for r in other.refs):
                continue
            inputs = []
            for ref in other.refs:
                spelled = next(f.name for f in ref.schema if f.name.lower() == theirs)
                own = {f.name.lower() for f in ref.schema}
                usable = [f for f in filters if _reads_only(f, own)]
                fragment = _fragment(f"__shoal_b{shipped}", ref, [spelled], usable)
                shipped += 1
                inputs.append(
                    replace(fragment, sql=fragment.sql.replace("SELECT ", "SELECT DISTINCT ", 1))
                )
            found.setdefault(key, []).append(_SemiJoin(mine, spelled, tuple(inputs)))
    return found


def _inner_only(select: exp.Select) -> bool:
    """Whether every join of the SELECT is a plain inner join with a condition."""
    for join in select.args.get("joins") or []:
        if (join.side or "") or (join.kind or "").upper() not in ("", "INNER"):
            return False
        if join.args.get("method") or not (join.args.get("on") or join.args.get("using")):
            return False
    return bool(select.args.get("joins"))


def _equi_pairs(select: exp.Select, alias: str, peers: set[str]) -> list[tuple[str, str, str]]:
    """(this side's column, the other side's column, the other side's alias) for every
    `a.x = b.y` in the joins' ON conditions (qualified columns only)."""
    pairs = []
    for join in select.args.get("joins") or []:
        on = join.args.get("on")
        if on is None:
            continue
        for conjunct in on.flatten() if isinstance(on, exp.And) else [on]:
            if not isinstance(conjunct, exp.EQ):
                continue
            left, right = conjunct.this, conjunct.expression
            if not (isinstance(left, exp.Column) and isinstance(right, exp.Column)):
                continue
            for a, b in ((left, right), (right, left)):
                if a.table.lower() == alias.lower() and b.table.lower() in peers:
                    pairs.append((a.name.lower(), b.name.lower(), b.table.lower()))
    return pairs


# -- broadcast joins ----------------------------------------------------------------------
def _broadcast(
    sql: str, tree: exp.Expr, occurrences: list[_Occurrence], columns: list[str]
) -> QueryPlan | None:
    """Ship the small sides of a join to the nodes holding the large side (see joins.py)."""
    sides = {
        id(o.table): JoinSide(
            table=o.table,
            alias=o.alias,
            columns={name.lower(): name for name, _ in _union_columns(o.refs)},
            rows=(
                sum(r.rows for r in o.refs if r.rows is not None)
                if all(r.rows is not None for r in o.refs)
                else None
            ),
            owners=len(o.refs),
            plain=not o.qualified,
        )
        for o in occurrences
    }
    shape = broadcast_shape(tree, list(sides.values()))
    if shape is None:
        return None
    conjuncts = _conjuncts(tree.args.get("where"))
    if not all(isinstance(node, _PUSHABLE) for c in conjuncts for node in c.walk()):
        return None  # every WHERE conjunct runs at the nodes, over the joined rows
    by_alias = {o.alias: o for o in occurrences}
    large = by_alias[shape.large.alias]
    types = {
        (o.alias, name.lower()): dtype
        for o in occurrences
        for name, dtype in _union_columns(o.refs)
    }
    types.update({(large.alias, NODE_COLUMN): pa.string()})
    joined_schema = pa.schema([pa.field(name, types[key]) for key, name in shape.joined.items()])
    where = tree.args.get("where")
    select_aliases = _select_aliases(tree)
    outer = _outer_joined(tree) if isinstance(tree, exp.Select) else set()
    inputs = []
    for index, side in enumerate(shape.small):
        occurrence = by_alias[side.alias]
        ref = occurrence.refs[0]
        filters = (
            []
            if side.alias in outer
            else _pushable_conjuncts(where, side.alias, False, select_aliases)
        )
        fetch = [side.columns[name] for name in side.needed]
        inputs.append(_fragment(f"__shoal_b{index}", ref, fetch, filters))
    positions = {id(t): i for i, t in enumerate(tree.find_all(exp.Table))}
    pristine = tree.copy()  # the statement as written: the nodes' joins are made from it

    def large_columns(ref: TableRef, names: list[str]) -> list[str]:
        """The large side's `names` at one owner (typed NULLs where it lacks one)."""
        own = {f.name.lower(): f for f in ref.schema}
        select = [
            _quoted(own[name].name)
            if name in own
            else f"CAST(NULL AS {_duck_type(types[large.alias, name])}) AS {_quoted(name)}"
            for name in names
            if name != NODE_COLUMN
        ]
        if not large.qualified and NODE_COLUMN in names:
            select.append(f"{_literal(ref.owner)} AS {_quoted(NODE_COLUMN)}")
        return select

    def join_sql(
        ref: TableRef,
        body_sql: str,
        extra: list[str],
        omit: set[str] | frozenset[str] = frozenset(),
    ) -> str:
        """The statement's join at one owner over `body_sql` as the large side, selecting
        the joined columns (but the large side's `omit`) and `extra` large-side columns."""
        copy = pristine.copy()
        tables = list(copy.find_all(exp.Table))
        body = sqlglot.parse_one(body_sql, read=_DIALECT)
        tables[positions[id(large.table)]].replace(
            exp.Subquery(
                this=body, alias=exp.TableAlias(this=exp.to_identifier(large.alias, quoted=True))
            )
        )
        for shipped, side in zip(inputs, shape.small, strict=True):
            tables[positions[id(side.table)]].replace(
                exp.Table(
                    this=exp.to_identifier(shipped.id, quoted=True),
                    alias=exp.TableAlias(this=exp.to_identifier(side.alias, quoted=True)),
                )
            )
        select_list = [
            exp.alias_(exp.column(name, table=alias, quoted=True), joined, quoted=True)
            for (alias, name), joined in shape.joined.items()
            if not (alias == large.alias and name in omit)
        ] + [exp.column(name, table=large.alias, quoted=True) for name in extra]
        copy.set(
            "expressions",
            select_list or [exp.alias_(exp.Literal.number(1), _ROW_MARKER, quoted=True)],
        )
        for part in ("group", "having", "order", "limit", "offset"):
            copy.set(part, None)
        return copy.sql(dialect=_DIALECT, identify=True)

    joins = []  # per owner of the large side: its join, giving the joined rows
    for ref in large.refs:
        select = large_columns(ref, shape.large.needed) or [f"1 AS {_quoted(_ROW_MARKER)}"]
        product_sql = f"{_quoted(ref.owner)}.{_quoted(ref.product)}"
        joins.append(join_sql(ref, f"SELECT {', '.join(select)} FROM {product_sql}", []))
    texts = tuple(c.sql(dialect=_DIALECT, identify=True) for c in conjuncts)
    # Large-side columns read anywhere but inside an aggregate: pre-aggregation keeps them.
    plain_reads = {
        name
        for column, (alias, name) in shape.references
        if alias == large.alias and column.find_ancestor(exp.AggFunc) is None
    }
    # The coordinator reads the joined rows under one alias; the join and WHERE ran.
    for column, key in shape.references:
        column.replace(exp.column(shape.joined[key], table=_JOINED, quoted=True))
    tree.set("joins", None)
    tree.set("where", None)
    joined_names: list[str] = list(shape.joined.values()) or [_ROW_MARKER]
    shipped_names = ", ".join(f"{f.owner}.{f.product}" for f in inputs)
    pushed = f"the join with {shipped_names}, which this node fetches"
    partial = plan_partial_aggregation(tree, _JOINED, [joined_schema], True, _PUSHABLE)
    top_n = None if partial is not None else _top_n(tree, _joined_occurrence(tree), [])
    eager = (
        _eager_states(partial, shape.joined, large.alias, shape.large.needed, plain_reads)
        if partial is not None
        else None
    )
    eager_joins = []
    if eager is not None:
        for ref in large.refs:
            product_sql = f"{_quoted(ref.owner)}.{_quoted(ref.product)}"
            grouped = large_columns(ref, eager.group)
            states = [f"{sql_text} AS {_quoted(name)}" for name, sql_text in eager.pre_states]
            body = f"SELECT {', '.join(grouped + states)} FROM {product_sql}"
            positions_of = [str(i + 1) for i in range(len(grouped))]
            if positions_of:
                body += f" GROUP BY {', '.join(positions_of)}"
            extra = [name for name, _ in eager.pre_states]
            eager_joins.append(join_sql(ref, body, extra, eager.state_only))
    fragments = []
    for index, (ref, joined_sql) in enumerate(zip(large.refs, joins, strict=True)):
        rows = f"({joined_sql}) AS {_quoted(_JOINED)}"
        sent: list[str] = joined_names
        aggregate, top_text = "", ""
        if partial is not None and eager is not None:
            sent = [*partial.keys, *(name for name, _ in partial.partials)]
            node_sql = eager.node_sql(partial, eager_joins[index])
            aggregate = partial.describe() + " (rows grouped before the join)"
        elif partial is not None:
            sent = [*partial.keys, *(name for name, _ in partial.partials)]
            node_sql = _grouping_sql(partial, rows, [])
            aggregate = partial.describe()
        elif top_n is not None:
            top_text = _top_n_text(top_n)
            node_sql = f"SELECT * FROM {rows} {top_text}"
        else:
            node_sql = joined_sql
        fragments.append(
            _fragment_of(
                ref,
                f"__shoal_f{index}",
                node_sql,
                sent,
                filters=texts,
                top_n=top_text,
                aggregate=aggregate,
                pushed=pushed,
                inputs=tuple(inputs),
            )
        )
    if partial is not None:
        for aggregate_node, merged in partial.combines:
            aggregate_node.replace(merged)
    union = sqlglot.parse_one(
        " UNION ALL ".join(
            f"SELECT {', '.join(_quoted(n) for n in f.columns)} FROM {_quoted(f.id)}"
            for f in fragments
        ),
        read=_DIALECT,
    )
    source = tree.args.get("from_") or tree.args.get("from")
    if source is None:
        return None
    source.this.replace(
        exp.Subquery(this=union, alias=exp.TableAlias(this=exp.to_identifier(_JOINED, quoted=True)))
    )
    notes = (
        f"{shipped_names} is shipped to the nodes of {large.alias}: the joined rows"
        f"{' (grouped)' if partial is not None else ''}, not {large.alias}'s rows, move",
    )
    final_sql = tree.sql(dialect=_DIALECT, identify=True)
    return QueryPlan(sql, tuple(fragments), final_sql, notes, tuple(columns), _volatile(tree))


@dataclass(frozen=True)
class _Eager:
    """Grouping the large side before a broadcast join: each node first sums (counts, takes
    the minimum or maximum of) its rows per join key and group column, then joins the few
    grouped rows with the small side and merges those states, instead of joining every row.
    Sums, counts, minima and maxima of the large side's own columns commute with the join:
    each large row meets the same small rows either way."""

    group: list[str]  # large-side columns kept (join keys, filters, group keys)
    pre_states: list[tuple[str, str]]  # (name, aggregate over the product's rows)
    outer: dict[str, str]  # partial state name -> its merge over the pre-grouped rows
    state_only: set[str]  # large-side columns read only inside aggregates: grouped away

    def node_sql(self, partial: PartialAggregation, joined_sql: str) -> str:
        keys = partial.select_list()[: len(partial.keys)]
        states = [f"{self.outer[name]} AS {_quoted(name)}" for name, _ in partial.partials]
        rows = f"({joined_sql}) AS {_quoted(_JOINED)}"
        return _grouping_sql(partial, rows, [], keys + states)


def _eager_states(
    partial: PartialAggregation,
    joined: dict[tuple[str, str], str],
    large: str,
    needed: list[str],
    plain_reads: set[str],
) -> _Eager | None:
    """The pre-grouping of the large side for `partial`, or None when a state is not a SUM,
    COUNT, MIN or MAX of one large-side column (or COUNT(*)) without FILTER."""
    source = {name: key for key, name in joined.items()}
    keys_read = {source[k][1] for k in partial.keys if k in source and source[k][0] == large}
    for expression in partial.key_expressions.values():
        for column in expression.find_all(exp.Column):
            key = source.get(column.name)
            if key is None:
                return None
            if key[0] == large:
                keys_read.add(key[1])
    state_only = {key[1] for key in joined if key[0] == large} - plain_reads - keys_read
    group = [name for name in needed if name not in state_only]
    pre_states: list[tuple[str, str]] = []
    outer: dict[str, str] = {}
    merges: dict[type[exp.Expr], str] = {
        exp.Sum: "SUM",
        exp.Count: "SUM",
        exp.Min: "MIN",
        exp.Max: "MAX",
    }
    for index, (name, state) in enumerate(partial.partials):
        merge = merges.get(type(state))
        argument = state.this
        if merge is None or state.find(exp.Filter, exp.Distinct) is not None:
            return None
        pre = f"__shoal_e{index}"
        if isinstance(state, exp.Count) and isinstance(argument, exp.Star):
            pre_states.append((pre, "COUNT(*)"))
        elif isinstance(argument, exp.Column) and argument.name in source:
            side, read = source[argument.name]
            if side != large:
                return None
            function = type(state).__name__.upper()
            pre_states.append((pre, f"{function}({_quoted(read)})"))
        else:
            return None
        outer[name] = f"{merge}({_quoted(pre)})"
    if not group:
        return None
    return _Eager(group, pre_states, outer, state_only)


def _joined_occurrence(tree: exp.Expr) -> _Occurrence:
    """The joined rows of a broadcast join, seen as one occurrence (for the top-N test)."""
    return _Occurrence(exp.Table(this=exp.to_identifier(_JOINED)), _JOINED, [], qualified=True)


# -- partial aggregation ------------------------------------------------------------------
def _runs_every_filter(
    where: exp.Expr | None, filters: list[exp.Expr], occurrence: _Occurrence
) -> bool:
    """Whether every WHERE conjunct is pushed, and every owner can run every one."""
    conjuncts = _conjuncts(where)
    if len(filters) != len(conjuncts):
        return False
    for ref in occurrence.refs:
        own = {f.name.lower() for f in ref.schema}
        if not all(_reads_only(f, own) for f in filters):
            return False
    return True


def _conjuncts(where: exp.Expr | None) -> list[exp.Expr]:
    if where is None:
        return []
    return list(where.this.flatten()) if isinstance(where.this, exp.And) else [where.this]


def _aggregate_fragments(
    occurrence: _Occurrence, filters: list[exp.Expr], partial: PartialAggregation, first_id: int
) -> tuple[exp.Expr, list[Fragment]]:
    """One grouping fragment per owner, and the union of their partial states."""
    fragments = []
    outputs = [*partial.keys, *(name for name, _ in partial.partials)]
    for index, ref in enumerate(occurrence.refs):
        texts = [_unqualified(f).sql(dialect=_DIALECT, identify=True) for f in filters]
        sql = _grouping_sql(partial, f"{_quoted(ref.owner)}.{_quoted(ref.product)}", texts)
        fragments.append(
            _fragment_of(
                ref,
                f"__shoal_f{first_id + index}",
                sql,
                outputs,
                filters=texts,
                aggregate=partial.describe(),
            )
        )
    selects = [[_quoted(c) for c in outputs] for _ in fragments]
    return _union(occurrence, fragments, selects), fragments


# Grouping at the nodes pays when it sends at most this share of the rows it reads.
GROUPING_PAYS_BELOW = 0.5


def _grouping_pays(partial: PartialAggregation, refs: list[TableRef]) -> tuple[bool, str]:
    """Whether grouping at the nodes shrinks what they send, from the catalog's row counts
    and distinct-value estimates, and why; it is assumed to pay when they are unknown."""
    keys = [k for k in partial.keys if k not in partial.key_expressions]
    if len(keys) != len(partial.keys):
        return True, ""  # an expression key (a day, a lower-cased name): no estimate
    rows = groups = 0
    for ref in refs:
        if ref.rows is None or ref.distinct is None or any(k not in ref.distinct for k in keys):
            return True, ""
        estimate = 1
        for key in keys:
            estimate *= max(1, ref.distinct[key])
        rows += ref.rows
        groups += min(ref.rows, estimate) if ref.rows else 0
    described = ", ".join(keys) or "nothing"
    if rows and groups > GROUPING_PAYS_BELOW * rows:
        return False, (
            f"grouping by {described} at the nodes would send about {groups:,} of "
            f"{rows:,} rows (catalog statistics), so only projection and filters are pushed"
        )
    return True, (
        f"partial aggregation chosen: about {groups:,} groups from {rows:,} rows "
        "(catalog statistics)"
    )


def _grouping_sql(
    partial: PartialAggregation,
    source: str,
    filters: list[str],
    select: list[str] | None = None,
) -> str:
    """The SQL a node runs to send its partial states per group of `source`'s rows (its
    keys and states, or `select` when the states are computed otherwise)."""
    sql = f"SELECT {', '.join(select or partial.select_list())} FROM {source}"
    if filters:
        sql += " WHERE " + " AND ".join(f"({t})" for t in filters)
    if partial.keys:
        sql += " GROUP BY " + ", ".join(_quoted(k) for k in partial.keys)
    elif partial.grouped:
        # Grouped only by _node: a node without rows must send no group, not a zero row.
        sql += " HAVING COUNT(*) > 0"
    return sql


# -- top-N ------------------------------------------------------------------------------
@dataclass(frozen=True)
class _TopN:
    """ORDER BY ... LIMIT k (or a bare LIMIT) that each node may apply to its own rows."""

    order: list[exp.Expr]  # ORDER BY items over this occurrence's columns; empty: any k rows
    rows: int  # LIMIT plus OFFSET: a node must send that many for the coordinator to skip

    def columns(self) -> set[str]:
        return {c.name.lower() for item in self.order for c in item.find_all(exp.Column)}


def _top_n(tree: exp.Expr, occurrence: _Occurrence, filters: list[exp.Expr]) -> _TopN | None:
    """The top-N a node may apply, when the statement is a plain filtered, ordered, limited
    scan of this one occurrence; None otherwise.

    Only then is "the first k rows at each node" a superset of the first k overall: no
    grouping, aggregate, window, DISTINCT or join can change which rows survive, and every
    WHERE conjunct runs at the node (a filter left for later could remove some of a node's
    k rows and let a row it did not send belong in the answer).
    """
    if not isinstance(tree, exp.Select):
        return None
    for part in ("joins", "group", "having", "qualify", "distinct", "laterals", "pivots"):
        if tree.args.get(part):
            return None
    if any(e.find(exp.AggFunc, exp.Window) for e in tree.expressions):
        return None
    rows = _constant(tree.args.get("limit"))
    offset = tree.args.get("offset")
    skip = _constant(offset) if offset is not None else 0
    if rows is None or skip is None:
        return None
    where = tree.args.get("where")
    conjuncts = (
        list(where.this.flatten())
        if where is not None and isinstance(where.this, exp.And)
        else ([where.this] if where is not None else [])
    )
    if len(filters) != len(conjuncts):
        return None
    order: list[exp.Expr] = []
    sort = tree.args.get("order")
    for item in sort.expressions if sort is not None else []:
        key = item.this
        if isinstance(key, exp.Literal) and key.is_int:  # ORDER BY 2: the select list's 2nd
            position = int(key.this) - 1
            if not 0 <= position < len(tree.expressions):
                return None
            chosen = tree.expressions[position]
            key = chosen.this if isinstance(chosen, exp.Alias) else chosen
        if not all(isinstance(node, _PUSHABLE) for node in key.walk()):
            return None
        columns = list(key.find_all(exp.Column))
        if not columns or not all(_belongs(c, occurrence.alias, True, set()) for c in columns):
            return None
        if any(c.name.lower() in _select_aliases(tree) for c in columns):
            return None  # may name a select-list alias, not the table's column
        ordered = item.copy()
        ordered.set("this", key.copy())
        order.append(ordered)
    return _TopN(order, rows + skip)


def _top_n_text(top_n: _TopN) -> str:
    """The ORDER BY ... LIMIT (or bare LIMIT) a node appends to its fragment."""
    if not top_n.order:
        return f"LIMIT {top_n.rows}"
    order = ", ".join(_unqualified(o).sql(dialect=_DIALECT, identify=True) for o in top_n.order)
    return f"ORDER BY {order} LIMIT {top_n.rows}"


def _constant(node: exp.Expr | None) -> int | None:
    """The integer of a LIMIT or OFFSET clause, if it is a plain non-negative literal."""
    if node is None:
        return None
    value = node.args.get("expression") or node.this
    if isinstance(value, exp.Literal) and value.is_int and int(value.this) >= 0:
        return int(value.this)
    return None


# -- the split ----------------------------------------------------------------------------
def _pushable_conjuncts(
    where: exp.Expr | None, alias: str, only_source: bool, select_aliases: set[str]
) -> list[exp.Expr]:
    """WHERE conjuncts that may run at the node holding `alias`."""
    if where is None:
        return []
    pushable = []
    for conjunct in where.this.flatten() if isinstance(where.this, exp.And) else [where.this]:
        if not all(isinstance(node, _PUSHABLE) for node in conjunct.walk()):
            continue
        if isinstance(conjunct, exp.In) and conjunct.args.get("query") is not None:
            continue
        columns = list(conjunct.find_all(exp.Column))
        if not columns:
            continue
        if any(c.args.get("db") or c.args.get("catalog") for c in columns):
            continue
        if all(_belongs(c, alias, only_source, select_aliases) for c in columns):
            pushable.append(conjunct)
    return pushable


def _belongs(column: exp.Column, alias: str, only_source: bool, select_aliases: set[str]) -> bool:
    if column.name.lower() == NODE_COLUMN:
        return False
    if column.table:
        return column.table.lower() == alias.lower()
    # An unqualified name is this table's only when it is the SELECT's one source, and not
    # a select-list alias (DuckDB lets WHERE use those).
    return only_source and column.name.lower() not in select_aliases


def _push_down(
    occurrence: _Occurrence,
    filters: list[exp.Expr],
    names_used: set[str],
    wants_everything: bool,
    first_id: int,
    top_n: _TopN | None = None,
    reducers: Sequence[_SemiJoin] = (),
) -> tuple[exp.Expr, list[Fragment]]:
    """The fragments for one occurrence and what replaces it in the coordinator's SQL."""
    columns = occurrence.columns
    needed = [
        (name, dtype) for name, dtype in columns if wants_everything or name.lower() in names_used
    ]
    fragments = []
    for index, ref in enumerate(occurrence.refs):
        own = {f.name.lower() for f in ref.schema}
        fetch = [name for name, _ in needed if name.lower() in own]
        usable = [f for f in filters if _reads_only(f, own)]
        # A node applies the top-N only when it runs every filter and has every sort column.
        node_top_n = (
            top_n if top_n and len(usable) == len(filters) and top_n.columns() <= own else None
        )
        semi = [r for r in reducers if r.column in own]
        fragments.append(
            _fragment(f"__shoal_f{first_id + index}", ref, fetch, usable, node_top_n, semi)
        )
    if occurrence.qualified:
        fragment = fragments[0]
        replacement: exp.Expr = exp.Table(
            this=exp.to_identifier(fragment.id, quoted=True),
            alias=exp.TableAlias(this=exp.to_identifier(occurrence.alias, quoted=True)),
        )
        return replacement, fragments
    selects = []
    for fragment in fragments:
        have = {c.lower() for c in fragment.columns}
        selects.append(
            [
                _quoted(name)
                if name.lower() in have
                else f"CAST(NULL AS {_duck_type(dtype)}) AS {_quoted(name)}"
                for name, dtype in needed
            ]
        )
    return _union(occurrence, fragments, selects), fragments


def _union(
    occurrence: _Occurrence, fragments: list[Fragment], selects: list[list[str]]
) -> exp.Expr:
    """What replaces the occurrence: its fragments' results under its alias, unioned, with
    `_node` naming each row's owner when the name was a plain one."""
    parts = []
    for fragment, ref, select in zip(fragments, occurrence.refs, selects, strict=True):
        if not occurrence.qualified:
            select = [*select, f"{_literal(ref.owner)} AS {_quoted(NODE_COLUMN)}"]
        parts.append(f"SELECT {', '.join(select)} FROM {_quoted(fragment.id)}")
    union = sqlglot.parse_one(" UNION ALL ".join(parts), read=_DIALECT)
    return exp.Subquery(
        this=union, alias=exp.TableAlias(this=exp.to_identifier(occurrence.alias, quoted=True))
    )


def _fragment(
    fragment_id: str,
    ref: TableRef,
    columns: list[str],
    filters: list[exp.Expr],
    top_n: _TopN | None = None,
    semi: Sequence[_SemiJoin] = (),
) -> Fragment:
    """A single-product SELECT with the given columns and filters, as DuckDB SQL."""
    select_list = ", ".join(_quoted(c) for c in columns) or f"1 AS {_quoted(_ROW_MARKER)}"
    sql = f"SELECT {select_list} FROM {_quoted(ref.owner)}.{_quoted(ref.product)}"
    texts = [_unqualified(f).sql(dialect=_DIALECT, identify=True) for f in filters]
    texts += [reducer.condition() for reducer in semi]
    if texts:
        sql += " WHERE " + " AND ".join(f"({t})" for t in texts)
    top_text = ""
    if top_n is not None:
        top_text = _top_n_text(top_n)
        sql += " " + top_text
    return _fragment_of(
        ref,
        fragment_id,
        sql,
        columns,
        filters=texts,
        top_n=top_text,
        pushed="; ".join(reducer.describe() for reducer in semi),
        inputs=tuple(shipped for reducer in semi for shipped in reducer.inputs),
    )


def _fragment_of(
    ref: TableRef, fragment_id: str, sql: str, columns: Sequence[str], **parts: Any
) -> Fragment:
    """A fragment reading `ref` at the version the plan saw, where it may run."""
    return Fragment(
        id=fragment_id,
        owner=ref.owner,
        product=ref.product,
        holders=tuple(ref.holders or (ref.owner,)),
        sql=sql,
        columns=tuple(columns),
        filters=tuple(parts.pop("filters", ())),
        version=ref.version,
        fallbacks=ref.fallbacks,
        **parts,
    )


def _union_columns(refs: list[TableRef]) -> list[tuple[str, pa.DataType]]:
    """Columns of the products under one name, in order of first appearance."""
    seen: dict[str, tuple[str, pa.DataType]] = {}
    for ref in refs:
        for field in ref.schema:
            seen.setdefault(field.name.lower(), (field.name, field.type))
    return list(seen.values())


def _reads_only(expression: exp.Expr, columns: set[str]) -> bool:
    return all(c.name.lower() in columns for c in expression.find_all(exp.Column))


def _unqualified(expression: exp.Expr) -> exp.Expr:
    """A copy with table qualifiers removed (the fragment reads one table)."""
    copy = expression.copy()
    for column in copy.find_all(exp.Column):
        column.set("table", None)
    return copy


@functools.lru_cache(maxsize=256)
def _duck_type(dtype: pa.DataType) -> str:
    """The DuckDB type of an Arrow type, for the NULL columns of a union."""
    with trusted_connection() as con:
        relation = con.from_arrow(pa.table({"c": pa.array([], type=dtype)}))
        return str(relation.types[0])


def _quoted(name: str) -> str:
    return quote_identifier(name)


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
