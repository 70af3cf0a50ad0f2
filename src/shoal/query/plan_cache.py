"""Plans kept for statements asked again over the same catalog.

Planning parses the statement, resolves every product, binds the result's columns in a
DuckDB session and writes each fragment's SQL: 5-20 ms, more than a node takes to answer
a small fragment. A plan depends on nothing but the statement's text and what the planner
is told about each product (its schema, holders and their order, version, row count,
distinct-count estimates, integer bounds and older holders), so the same text over an
equal description gets an equal plan. Plans are immutable, and a changed description (a
new version, a node gone down, a replica caught up) is a different key, so a kept plan is
never stale. Statements that fail to plan are not kept: the next ask fails the same way.

Bounded by count (a plan is a few kilobytes); the least recently used go first.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence

from shoal.query.plan import QueryPlan, TableRef

__all__ = ["PlanCache", "catalog_key"]


def catalog_key(tables: Sequence[TableRef]) -> tuple[object, ...]:
    """Everything the planner reads of `tables`, as a hashable value."""
    return tuple(
        (
            t.owner,
            t.product,
            t.schema,
            t.holders,
            t.version,
            t.rows,
            tuple(sorted(t.distinct.items())) if t.distinct else None,
            tuple((k, tuple(v)) for k, v in sorted(t.bounds.items())) if t.bounds else None,
            t.fallbacks,
        )
        for t in tables
    )


class PlanCache:
    """A thread-safe LRU of plans keyed by (statement, catalog key)."""

    def __init__(self, max_plans: int = 256) -> None:
        self.max_plans = max_plans
        self._plans: OrderedDict[tuple[str, tuple[object, ...]], QueryPlan] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def plan(
        self,
        sql: str,
        tables: Sequence[TableRef],
        make: Callable[[str, Sequence[TableRef]], QueryPlan],
    ) -> QueryPlan:
        """The plan of `sql` over `tables`: kept, or made by `make` (and then kept)."""
        key = (sql, catalog_key(tables))
        with self._lock:
            kept = self._plans.get(key)
            if kept is not None:
                self._plans.move_to_end(key)
                self.hits += 1
                return kept
            self.misses += 1
        made = make(sql, tables)  # outside the lock: planning may take milliseconds
        if self.max_plans > 0:
            with self._lock:
                self._plans[key] = made
                self._plans.move_to_end(key)
                while len(self._plans) > self.max_plans:
                    self._plans.popitem(last=False)
        return made

    def __len__(self) -> int:
        return len(self._plans)
