"""Where a federated query's time and bytes went: what `shoal explain --analyze` prints.

A `QueryProfile` is filled while a plan runs. The stages are:

* **planning** — parsing, binding and splitting the statement at the coordinator;
* **node execution** — per fragment, the time the serving node spent producing its rows
  (it reports this itself, measured around its engine only, so time spent sending is not
  counted); for a fragment answered from the cache it is zero;
* **transfer** — per fragment, the rest of the time from asking to holding the whole
  result: the network, serialization and waiting for a free slot at the node;
* **fetch** — wall time of all fragments, which run in parallel;
* **merge** — the coordinator's own SQL over the fragment results.

Rows and bytes are those moved to the coordinator (Arrow in-memory size of each fragment's
result), the figures the pushdown exists to make small.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from shoal.query.plan import QueryPlan

__all__ = ["FragmentRun", "QueryProfile", "profiled_reader"]


@dataclass
class FragmentRun:
    """What running one fragment cost."""

    fragment: str
    node: str
    rows: int = 0
    bytes: int = 0
    seconds: float = 0.0  # asked -> whole result held at the coordinator
    node_seconds: float | None = None  # reported by the serving node; None if unknown
    cached: bool = False
    version: int | None = None  # the Delta version read (None: the latest there)
    stale: bool = False  # read from a holder of an older version than the newest known
    failed: list[str] = field(default_factory=list)  # holders tried first, and why

    @property
    def transfer_seconds(self) -> float | None:
        if self.node_seconds is None:
            return None
        return max(0.0, self.seconds - self.node_seconds)

    def to_dict(self) -> dict[str, Any]:
        return {
            "fragment": self.fragment,
            "node": self.node,
            "rows": self.rows,
            "bytes": self.bytes,
            "cache": "hit" if self.cached else "miss",
            "seconds": round(self.seconds, 6),
            "node_seconds": None if self.node_seconds is None else round(self.node_seconds, 6),
            "transfer_seconds": (
                None if self.transfer_seconds is None else round(self.transfer_seconds, 6)
            ),
            "version": self.version,
            "stale": self.stale,
            "failed_over_from": list(self.failed),
        }


@dataclass
class QueryProfile:
    """The figures of one run of a plan (filled by the executor and the fragment runner)."""

    planning_seconds: float = 0.0
    fetch_seconds: float = 0.0
    merge_seconds: float = 0.0
    result_rows: int = 0
    runs: dict[str, FragmentRun] = field(default_factory=dict)
    plan: QueryPlan | None = None
    result_cached: bool = False  # the whole answer came from the coordinator's exact cache
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def run(self, fragment_id: str, node: str) -> FragmentRun:
        """The record of one fragment (created on first use; fragments run in threads)."""
        with self._lock:
            found = self.runs.get(fragment_id)
            if found is None:
                found = self.runs[fragment_id] = FragmentRun(fragment_id, node)
            return found

    @property
    def rows_moved(self) -> int:
        return sum(r.rows for r in self.runs.values())

    @property
    def bytes_moved(self) -> int:
        return sum(r.bytes for r in self.runs.values())

    @property
    def total_seconds(self) -> float:
        return self.planning_seconds + self.fetch_seconds + self.merge_seconds

    def to_dict(self) -> dict[str, Any]:
        return {
            "plan": self.plan.to_dict() if self.plan is not None else None,
            "stages": {
                "planning_seconds": round(self.planning_seconds, 6),
                "fetch_seconds": round(self.fetch_seconds, 6),
                "merge_seconds": round(self.merge_seconds, 6),
                "total_seconds": round(self.total_seconds, 6),
            },
            "rows_moved": self.rows_moved,
            "bytes_moved": self.bytes_moved,
            "result_rows": self.result_rows,
            "result_cached": self.result_cached,
            "fragments": [run.to_dict() for run in self.runs.values()],
        }

    def report(self) -> dict[str, Any]:
        """What `explain --analyze` answers: the plan, the figures and both as text."""
        analysis = self.to_dict()
        return {"plan": analysis.pop("plan"), "analysis": analysis, "text": self.explain()}

    def explain(self) -> str:
        """The plan as `QueryPlan.explain` prints it, with what each fragment cost."""
        plan = self.plan if self.plan is not None else QueryPlan("", (), "")
        lines = [plan.explain(), "analysis:"]
        if self.result_cached:
            lines.append("  the whole answer came from the coordinator's exact cache")
        lines.append(
            f"  planning {_ms(self.planning_seconds)}, fragments {_ms(self.fetch_seconds)} "
            f"(in parallel), merge {_ms(self.merge_seconds)}, total {_ms(self.total_seconds)}"
        )
        lines.append(
            f"  moved {_rows(self.rows_moved)}, {_size(self.bytes_moved)}; "
            f"result {_rows(self.result_rows)}"
        )
        for fragment in plan.fragments:
            run = self.runs.get(fragment.id)
            if run is None:
                continue
            if run.cached:
                timing = f"cache hit, {_ms(run.seconds)}"
            elif run.node_seconds is None:
                timing = f"cache miss, {_ms(run.seconds)}"
            else:
                timing = (
                    f"cache miss, node {_ms(run.node_seconds)} + "
                    f"transfer {_ms(run.transfer_seconds or 0.0)}"
                )
            lines.append(
                f"  {run.fragment} at {run.node}: {_rows(run.rows)}, {_size(run.bytes)}, {timing}"
            )
        return "\n".join(lines)


def profiled_reader(
    reader: pa.RecordBatchReader,
    profile: QueryProfile,
    on_done: Callable[[QueryProfile], None] | None = None,
) -> pa.RecordBatchReader:
    """`reader`, counting the result's rows and the time spent producing its batches (the
    coordinator's merge) into `profile`; `on_done` runs once the last batch was read."""

    def batches() -> Iterator[pa.RecordBatch]:
        while True:
            started = time.perf_counter()
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                profile.merge_seconds += time.perf_counter() - started
                break
            profile.merge_seconds += time.perf_counter() - started
            profile.result_rows += batch.num_rows
            yield batch
        if on_done is not None:
            on_done(profile)

    return pa.RecordBatchReader.from_batches(reader.schema, batches())


def _rows(count: int) -> str:
    return f"{count:,} row" if count == 1 else f"{count:,} rows"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _size(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"
