"""Shoal: a data mesh in a box.

>>> import shoal
>>> mesh = shoal.connect("./.shoal")
>>> mesh.sql("SELECT store, sum(amount) FROM sales GROUP BY ALL").df()
"""

from __future__ import annotations

from shoal.client import Mesh, Result, connect
from shoal.errors import (
    BreakingChangeError,
    ConflictError,
    ContractViolation,
    DiskFullError,
    LockdownError,
    NotFoundError,
    RefusedError,
    ShoalError,
    SourceError,
    UsageError,
)
from shoal.node import Node

__version__ = "0.1.0"

__all__ = [
    "BreakingChangeError",
    "ConflictError",
    "ContractViolation",
    "DiskFullError",
    "LockdownError",
    "Mesh",
    "Node",
    "NotFoundError",
    "RefusedError",
    "Result",
    "ShoalError",
    "SourceError",
    "UsageError",
    "__version__",
    "connect",
]
