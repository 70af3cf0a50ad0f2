"""Running a plan: fragments in parallel where the data is, then the coordinator's SQL.

Each fragment's result is read whole into Arrow before the coordinator starts (a fragment
result may be scanned more than once by the final query, and a stream can be read once);
projections and filters already ran at the nodes, so this is what the query needs. The
coordinator runs in the same locked-down DuckDB as local SQL, seeing only the fragment
results.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa

from shoal.engine import LockedSession
from shoal.errors import ShoalError
from shoal.query.plan import Fragment, QueryPlan
from shoal.query.profile import QueryProfile, profiled_reader

__all__ = ["FragmentRunner", "execute_plan"]

FragmentRunner = Callable[[Fragment], pa.RecordBatchReader]


def execute_plan(
    plan: QueryPlan,
    run_fragment: FragmentRunner,
    *,
    memory_limit: str = "2GB",
    threads: int = 0,
    max_parallel: int = 32,
    profile: QueryProfile | None = None,
    on_done: Callable[[QueryProfile], None] | None = None,
) -> pa.RecordBatchReader:
    """Run `plan`; fragments go to `run_fragment`, which may run them anywhere.

    Up to `max_parallel` fragments are asked at once. The threads mostly wait on the
    network, and a mesh of 16 stores on their own machines should not be asked in two
    waves, as the old limit of 8 did; the bound only caps the threads.

    With a `profile`, the fragments' rows, bytes and times and the merge time are recorded
    in it (the merge as the returned reader is read; `on_done` runs after its last batch).
    """
    profile = profile if profile is not None else QueryProfile()
    results: dict[str, pa.Table] = {}
    started = time.perf_counter()
    if plan.fragments:
        workers = max(1, min(max_parallel, len(plan.fragments)))
        with ThreadPoolExecutor(workers, thread_name_prefix="fragment") as pool:
            futures = {f.id: pool.submit(_fetch, run_fragment, f, profile) for f in plan.fragments}
            for fragment_id, future in futures.items():
                results[fragment_id] = future.result()
    merging = time.perf_counter()
    profile.fetch_seconds += merging - started
    session = LockedSession(memory_limit=memory_limit, threads=threads)
    session.expose({("main", fid): table for fid, table in results.items()}, aliases=False)
    session.lock()
    reader = _renamed(session.run(plan.final_sql), plan.columns)
    profile.merge_seconds += time.perf_counter() - merging
    return profiled_reader(reader, profile, on_done)


def _renamed(reader: pa.RecordBatchReader, names: tuple[str, ...]) -> pa.RecordBatchReader:
    """The result under the column names of the statement as the user wrote it."""
    if not names or list(names) == reader.schema.names or len(names) != len(reader.schema):
        return reader
    schema = pa.schema(
        [field.with_name(name) for field, name in zip(reader.schema, names, strict=True)],
        metadata=reader.schema.metadata,
    )
    batches = (batch.rename_columns(list(names)) for batch in reader)
    return pa.RecordBatchReader.from_batches(schema, batches)


def _fetch(run_fragment: FragmentRunner, fragment: Fragment, profile: QueryProfile) -> pa.Table:
    node = fragment.holders[0] if fragment.holders else fragment.owner
    run = profile.run(fragment.id, node)
    started = time.perf_counter()
    try:
        table = run_fragment(fragment).read_all()
    except ShoalError as exc:
        where = f"{fragment.owner}.{fragment.product}"
        if where not in exc.message:
            exc.message = f"reading {where} at node '{node}': {exc.message}"
            exc.args = (exc.message,)
        raise
    except Exception as exc:
        raise ShoalError(
            f"reading {fragment.owner}.{fragment.product} at node '{node}' failed: {exc}"
        ) from exc
    wanted = list(fragment.columns) or table.column_names
    if table.column_names != wanted:
        raise ShoalError(
            f"node '{node}' answered {fragment.owner}.{fragment.product} with columns "
            f"{table.column_names}, not {wanted}"
        )
    run.seconds = time.perf_counter() - started
    run.rows = table.num_rows
    run.bytes = table.nbytes
    return table
