"""Broadcast joins: ship a small side to the nodes that hold the large one.

When a statement joins one large occurrence with small ones (by catalog row counts), each
node holding a part of the large side fetches the small sides itself (filtered, as
fragments of their own) and runs the join on its rows; only the joined rows (or their
partial aggregates) move to the coordinator, and the large side never does.

The rows a node produces are exactly the rows of the global join whose large-side row it
owns: an inner join pairs each large row with every matching small row, and a LEFT join
that keeps the large side adds a NULL-padded row when nothing matched, both decided by the
large row alone. So the coordinator's union of the nodes' join results is the join. Shapes
where that does not hold (the large side null-supplying, FULL or RIGHT joins, joins between
two large sides, subqueries, `*`) are left to the ordinary split.

This module only analyses the statement; `planner.py` builds the fragments.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlglot import exp

__all__ = ["BROADCAST_MAX_ROWS", "BroadcastShape", "JoinSide", "broadcast_shape"]

# A side is small when shipping it to every node of the large side moves fewer rows than
# fetching the large side would, and it has at most this many rows.
BROADCAST_MAX_ROWS = 200_000
_NODE_COLUMN = "_node"


@dataclass
class JoinSide:
    """One occurrence taking part in the join."""

    table: exp.Table  # in the statement's tree
    alias: str
    columns: dict[str, str]  # column names (lower case) -> as the schema spells them
    rows: int | None
    owners: int  # how many nodes own a product under this name
    plain: bool  # a plain name (a union with `_node`), not NODE.PRODUCT
    needed: list[str] = field(default_factory=list)  # columns the statement reads, in order


@dataclass
class BroadcastShape:
    large: JoinSide
    small: list[JoinSide]
    # Each column the statement reads, as (side alias, column name), with the name it gets
    # in the joined rows the nodes send.
    joined: dict[tuple[str, str], str]
    references: list[tuple[exp.Column, tuple[str, str]]]  # tree column -> its side column


def broadcast_shape(tree: exp.Expr, sides: list[JoinSide]) -> BroadcastShape | None:
    """The broadcast split of `tree` over `sides` (every product occurrence in it), or None
    when the statement is not a join of one large side with small ones that it may use."""
    if not isinstance(tree, exp.Select) or len(sides) < 2:
        return None
    for part in ("with", "with_", "laterals", "pivots", "qualify", "distinct"):
        if tree.args.get(part):
            return None
    for node in tree.walk():
        if isinstance(node, exp.Subquery | exp.Union | exp.Lateral) or (
            isinstance(node, exp.Select) and node is not tree
        ):
            return None
        if isinstance(node, exp.Star) and not isinstance(node.parent, exp.Count):
            return None
        if isinstance(node, exp.Columns) or (
            isinstance(node, exp.Anonymous) and node.name.lower() == "columns"
        ):
            return None
    source = tree.args.get("from_") or tree.args.get("from")
    joins = tree.args.get("joins") or []
    if source is None or not joins or not isinstance(source.this, exp.Table):
        return None
    by_table = {id(side.table): side for side in sides}
    order = [by_table.get(id(source.this))]
    left_joined = False
    for join in joins:
        side = (join.side or "").upper()
        kind = (join.kind or "").upper()
        if kind not in ("", "INNER") or side not in ("", "LEFT"):
            return None
        if join.args.get("method") or not (join.args.get("on") or join.args.get("using")):
            return None
        if not isinstance(join.this, exp.Table):
            return None
        left_joined = left_joined or side == "LEFT"
        order.append(by_table.get(id(join.this)))
    if any(side is None for side in order) or len(order) != len(sides):
        return None
    ordered = [side for side in order if side is not None]
    if left_joined:
        large = ordered[0]  # the preserved side of every LEFT join
    else:
        large = max(ordered, key=lambda s: -1 if s.rows is None else s.rows)
        if any(s.rows is None for s in ordered):
            unknown = [s for s in ordered if s.rows is None]
            if len(unknown) > 1:
                return None
            large = unknown[0]
    small = [s for s in ordered if s is not large]
    if any(s.rows is None or s.rows > BROADCAST_MAX_ROWS or s.plain for s in small):
        return None
    shipped = sum(s.rows or 0 for s in small) * max(1, large.owners)
    if large.rows is not None and shipped >= large.rows:
        return None
    references = _references(tree, ordered, joins)
    if references is None:
        return None
    joined: dict[tuple[str, str], str] = {}
    for _, key in references:
        if key not in joined:
            joined[key] = f"__j{len(joined)}"
    for join in joins:
        for identifier in join.args.get("using") or []:
            for side in ordered:
                name = identifier.name.lower()
                if name in side.columns and name not in side.needed:
                    side.needed.append(name)
    for alias, name in joined:
        side = next(s for s in ordered if s.alias == alias)
        if name not in side.needed:
            side.needed.append(name)
    return BroadcastShape(large, small, joined, references)


def _references(
    tree: exp.Select, sides: list[JoinSide], joins: list[exp.Join]
) -> list[tuple[exp.Column, tuple[str, str]]] | None:
    """Every column reference in the statement with the side column it reads; None if one
    cannot be resolved for sure."""
    aliases = {e.alias.lower() for e in tree.expressions if isinstance(e, exp.Alias)}
    using = {i.name.lower() for join in joins for i in join.args.get("using") or []}
    found: list[tuple[exp.Column, tuple[str, str]]] = []
    for column in tree.find_all(exp.Column):
        if column.args.get("db") or column.args.get("catalog"):
            return None
        name = column.name.lower()
        if column.table:
            side = next((s for s in sides if s.alias.lower() == column.table.lower()), None)
            if side is None or not _has(side, name):
                return None
            found.append((column, (side.alias, name)))
            continue
        having = [s for s in sides if _has(s, name)]
        if not having:
            if name in aliases:
                continue  # a select-list alias (ORDER BY, GROUP BY), not a column
            return None
        if name in aliases:
            return None  # a column and an alias of the same name: leave it to DuckDB
        if len(having) > 1 and name not in using:
            return None
        # An unqualified USING key reads the leftmost side's value, which for INNER and
        # LEFT joins is the joined row's key.
        found.append((column, (having[0].alias, name)))
    return found


def _has(side: JoinSide, name: str) -> bool:
    return name in side.columns or (side.plain and name == _NODE_COLUMN)
