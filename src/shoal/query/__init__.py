"""Federated SQL: split one statement over the nodes that hold the data, then finish it.

See docs/query.md for how names resolve and what is pushed down.
"""

from __future__ import annotations

from shoal.query.executor import FragmentRunner, execute_plan
from shoal.query.plan import Fragment, QueryPlan, TableRef
from shoal.query.planner import NODE_COLUMN, plan_query

__all__ = [
    "NODE_COLUMN",
    "Fragment",
    "FragmentRunner",
    "QueryPlan",
    "TableRef",
    "execute_plan",
    "plan_query",
]
