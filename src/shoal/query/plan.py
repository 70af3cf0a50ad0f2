"""What the planner produces: fragments to run where the data is, and the coordinator's part.

A `QueryPlan` is plain data, so it can be explained to users, sent over the API as JSON,
and executed by any runner (in process in tests, over Arrow Flight in a mesh).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

__all__ = ["Fragment", "QueryPlan", "TableRef"]


@dataclass(frozen=True)
class TableRef:
    """One product in the mesh catalog, as the planner needs it."""

    owner: str
    product: str
    schema: pa.Schema
    holders: tuple[str, ...] = ()  # nodes able to serve it; empty means (owner,)
    version: int | None = None  # the Delta table version the catalog knows, if any
    rows: int | None = None  # rows at that version, if known: decides broadcast joins
    # Estimated distinct values per column (lower case), if known: decides whether
    # grouping at the nodes pays. Not part of equality.
    distinct: Mapping[str, int] | None = field(default=None, compare=False, hash=False)
    # [min, max] per integer column (lower case), if known: a node whose rows cannot pass a
    # filter is not asked.
    bounds: Mapping[str, Sequence[int]] | None = field(default=None, compare=False, hash=False)
    # Holders of an older version only, with the Delta version each has: read when no
    # holder of the newest version answers, and the answer says it is stale.
    fallbacks: tuple[tuple[str, int], ...] = field(default=(), compare=False, hash=False)

    @property
    def name(self) -> str:
        return f"{self.owner}.{self.product}"


@dataclass(frozen=True)
class Fragment:
    """One node's part of a query: a single-product SELECT with what could be pushed down."""

    id: str  # also the table name under which the coordinator reads its result
    owner: str
    product: str
    holders: tuple[str, ...]  # where it may run, preferred first
    sql: str  # DuckDB SQL reading only "<owner>"."<product>"
    columns: tuple[str, ...]
    filters: tuple[str, ...]
    # The Delta version to read: every fragment of a plan reads the version the plan saw,
    # which also makes its result cacheable exactly. None reads the latest.
    version: int | None = None
    top_n: str = ""  # "ORDER BY ... LIMIT k" or "LIMIT k" applied at the node, if any
    aggregate: str = ""  # the partial aggregation the node computes, if any
    # Other products of the same owner the SQL reads, with their versions: a join or
    # subquery whose tables all live on one node runs there whole.
    also: tuple[tuple[str, int | None], ...] = ()
    pushed: str = ""  # what else runs at the node, in words (e.g. "the whole statement")
    # Fragments whose results the serving node fetches itself (from their holders) and
    # reads under their ids: the small sides of a broadcast join.
    inputs: tuple[Fragment, ...] = ()
    # Reads a function whose value changes between runs (random(), now()): never cached.
    volatile: bool = False
    # Holders of an older version, with theirs: tried when every holder above fails.
    fallbacks: tuple[tuple[str, int], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "node": self.holders[0] if self.holders else self.owner,
            "owner": self.owner,
            "product": self.product,
            "holders": list(self.holders),
            "sql": self.sql,
            "columns": list(self.columns),
            "filters": list(self.filters),
            "version": self.version,
            "top_n": self.top_n,
            "aggregate": self.aggregate,
            "also": [{"product": name, "version": version} for name, version in self.also],
            "pushed": self.pushed,
            "inputs": [f.to_dict() for f in self.inputs],
            "fallbacks": [{"node": node, "version": v} for node, v in self.fallbacks],
        }


@dataclass(frozen=True)
class QueryPlan:
    """The user's statement split into fragments and the SQL that finishes it."""

    sql: str
    fragments: tuple[Fragment, ...]
    final_sql: str
    notes: tuple[str, ...] = field(default=())  # why something was not pushed down
    columns: tuple[str, ...] = field(default=())  # the result's names, as written
    volatile: bool = False  # the statement calls random(), now() or the like: never cached

    def to_dict(self) -> dict[str, Any]:
        return {
            "sql": self.sql,
            "fragments": [f.to_dict() for f in self.fragments],
            "coordinator": self.final_sql,
            "notes": list(self.notes),
        }

    def explain(self) -> str:
        """The plan as text: per node, its fragments; then what the coordinator does."""
        lines: list[str] = []
        by_node: dict[str, list[Fragment]] = {}
        for fragment in self.fragments:
            node = fragment.holders[0] if fragment.holders else fragment.owner
            by_node.setdefault(node, []).append(fragment)
        if not by_node:
            lines.append("no node data is read; the coordinator answers alone")
        for node in sorted(by_node):
            lines.append(f"node {node}:")
            for fragment in by_node[node]:
                products = [fragment.product, *(name for name, _ in fragment.also)]
                lines.append(
                    f"  {fragment.id}: {', '.join(f'{fragment.owner}.{p}' for p in products)}"
                )
                if fragment.pushed:
                    lines.append(f"    runs at the node: {fragment.pushed}")
                    lines.append(f"    sql: {fragment.sql}")
                for shipped in fragment.inputs:
                    node_of = shipped.holders[0] if shipped.holders else shipped.owner
                    lines.append(
                        f"    fetches {shipped.id} from node {node_of}: {shipped.owner}."
                        f"{shipped.product} ({', '.join(shipped.columns) or 'row count'}; "
                        f"filters: {' AND '.join(shipped.filters) or 'none'})"
                    )
                if fragment.pushed and not fragment.inputs:
                    continue
                columns = ", ".join(fragment.columns) if fragment.columns else "(row count only)"
                lines.append(f"    columns: {columns}")
                if fragment.filters:
                    lines.append(f"    filters pushed down: {' AND '.join(fragment.filters)}")
                else:
                    lines.append("    filters pushed down: none")
                if fragment.aggregate:
                    lines.append(f"    partial aggregate: {fragment.aggregate}")
                if fragment.top_n:
                    lines.append(f"    top-N pushed down: {fragment.top_n}")
        lines.append("coordinator:")
        lines.append(f"  {self.final_sql}")
        for note in self.notes:
            lines.append(f"  note: {note}")
        return "\n".join(lines)
