"""PostgreSQL with postgres_fdw: the federation most small businesses could build today.

One temporary cluster per store and one for the catalogue's owner (`hq`), each holding its
Parquet file as a table with a primary key, and a coordinator cluster on which `orders` is a
table partitioned by store whose partitions are postgres_fdw foreign tables, as
PostgreSQL's documentation recommends for this job: fetch_size 10000, use_remote_estimate,
async_capable (the partitions are scanned at once), enable_partitionwise_aggregate and
enable_partitionwise_join on, ANALYZE everywhere. Beside it, optionally, one cluster
holding all rows in one table (the centralized PostgreSQL). Clusters run with password
authentication on loopback ports, from Debian's `postgresql` package
(scripts/ensure-postgres.sh installs it), lean enough for 17 to share a machine
(`LEAN_SETTINGS`: the default 128MB of shared buffers, 50 connections, and work_mem 64MB
rather than 4MB, so aggregates of millions of rows stay in memory), with fsync, full-page
writes and most WAL off, which only speeds up the load; everything else, JIT and parallel
query included, keeps PostgreSQL's defaults.

What postgres_fdw pushes to the stores (PostgreSQL 15, EXPLAIN VERBOSE on the coordinator,
3 stores; `--explain` prints the plans):

- Q1 revenue by store: all of it. Grouped by the partition key, the aggregate runs per
  partition: `Remote SQL: SELECT store, count(*), round(sum(amount)::numeric, 2)::double
  precision FROM public.orders GROUP BY 1` on each store (even the rounding), one row back
  from each, all asked at once (Async Foreign Scan); only the sort runs on the coordinator.
- Q2 revenue by day, one month: the filter only. postgres_fdw cannot push a partial
  aggregate, so each store sends every row of the month (`SELECT amount, ordered_at FROM
  public.orders WHERE ((ordered_at >= ...)) AND ((ordered_at < ...))`, asynchronously) and
  the coordinator groups them.
- Q3 top 10 SKUs: the projection only: each store sends `sku, amount` of all its rows. The
  coordinator runs a Partial HashAggregate per partition, and a foreign scan under one is
  not asynchronous, so the stores are read one after the other; the final grouping, the
  sort and the limit run on the coordinator too.
- Q4 one order by id: the filter (`WHERE ((order_id = ...))`), answered by each store's
  primary key; as the partition key is the store, no partition is pruned and every store is
  asked (at once).
- Q5 revenue by category: the projection only. The catalogue lives on another server, so
  the join cannot go to a store: the stores send `product_id, amount` of all rows, hq sends
  `product_id, category`, and the hash join and the aggregate run on the coordinator.
- Q6 distinct customers: the projection only: every store sends all its customer ids
  (count(DISTINCT) has no partial form), and the coordinator counts them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from adbc_driver_postgresql import StatementOptions
from adbc_driver_postgresql import dbapi as postgres

from shoal.results import first_difference

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.pgserver import PostgresServer

from common import DATA_DIR
from federated import HQ, QUERIES, STORES, store_files

__all__ = ["POSTGRES_QUERIES", "PostgresFederation", "main"]

# PostgreSQL's round() takes and gives numeric, which ADBC returns as text: the casts give
# the same types as DuckDB's answers, so they compare as they are.
_REVENUE = "round(sum(amount)::numeric, 2)::float8"
POSTGRES_QUERIES: dict[str, str] = {
    "Q1 revenue by store": (
        f"SELECT store, count(*) AS orders, {_REVENUE} AS revenue FROM orders GROUP BY 1 ORDER BY 1"
    ),
    "Q2 revenue by day, one month": (
        f"SELECT ordered_at::date AS day, {_REVENUE} AS revenue FROM orders "
        "WHERE ordered_at >= TIMESTAMP '2026-03-01' AND ordered_at < TIMESTAMP '2026-04-01' "
        "GROUP BY 1 ORDER BY 1"
    ),
    "Q3 top 10 SKUs by revenue": (
        f"SELECT sku, {_REVENUE} AS revenue FROM orders "
        "GROUP BY sku ORDER BY revenue DESC, sku LIMIT 10"
    ),
    "Q4 one order by id": (
        "SELECT order_id, customer_id, sku, amount FROM orders WHERE order_id = {order_id}"
    ),
    "Q5 revenue by category (join with hq's catalogue)": (
        "SELECT c.category, round(sum(o.amount)::numeric, 2)::float8 AS revenue FROM orders o "
        "JOIN catalogue c USING (product_id) GROUP BY 1 ORDER BY 1"
    ),
    "Q6 distinct customers": "SELECT count(DISTINCT customer_id) AS customers FROM orders",
}

COORDINATOR = "coordinator"
SINGLE = "single"
# Up to 17 clusters share the machine: each keeps PostgreSQL's default 128MB of shared
# buffers and few connections. fsync, full-page writes and WAL (minimal: the load's
# COPY into a table created in the same transaction skips it) only speed up the load.
LEAN_SETTINGS = {
    "shared_buffers": "128MB",
    "work_mem": "64MB",
    "maintenance_work_mem": "256MB",
    "max_connections": "50",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "max_wal_size": "4GB",
    "full_page_writes": "off",
    "synchronous_commit": "off",
}
PARTITIONWISE = {"enable_partitionwise_aggregate": "on", "enable_partitionwise_join": "on"}
FDW_OPTIONS = {"fetch_size": "10000", "use_remote_estimate": "true", "async_capable": "true"}
BATCH_ROWS = 100_000
PARALLEL = max(2, os.cpu_count() or 1)


class PostgresFederation:
    """Context manager. Starts one cluster per store plus one for the catalogue owner ("hq")
    plus a coordinator cluster, and (if single=True) one single cluster holding all rows.

    Loads each store's Parquet file into its cluster (table orders, with a primary key on
    order_id as a real deployment would have, ANALYZE), builds on the coordinator a table
    `orders` PARTITIONED BY LIST (store) whose partitions are postgres_fdw foreign tables
    (one server per store, user mapping with the password, `FDW_OPTIONS`), a foreign table
    `catalogue` on hq, `PARTITIONWISE` on, ANALYZE on the coordinator too. Stops every
    cluster it started on exit, also on exceptions, KeyboardInterrupt and SIGTERM (which
    raises SystemExit for the duration). `settings` override `LEAN_SETTINGS` on every
    cluster; `parent` is the folder the clusters live in (the system's temporary folder by
    default; under root the `postgres` user must be able to enter it).
    """

    def __init__(
        self,
        files: dict[str, Path],
        *,
        single: bool = True,
        progress: Callable[[str], None] = print,
        settings: dict[str, str] | None = None,
        parent: Path | None = None,
    ) -> None:
        self.files = dict(files)
        self.stores = [name for name in files if name != HQ]
        self.single = single
        self.progress = progress
        self.settings = {**LEAN_SETTINGS, **(settings or {})}
        self.parent = parent
        self.clusters: dict[str, PostgresServer] = {}
        self._connections: list[Any] = []
        self._federated: Any = None
        self._single: Any = None
        self._closing = threading.Event()
        self._previous_sigterm: Any = None

    def __enter__(self) -> PostgresFederation:
        self._catch_sigterm()
        try:
            self._start_clusters()
            self._load()
            self._build_coordinator()
            self._federated = self.connect_federated()
            self._single = self._connect(SINGLE) if self.single else None
        except BaseException:
            self._stop()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop()

    def federated_sql(self, sql: str) -> pa.Table:
        """The answer of the coordinator, which asks the stores through postgres_fdw."""
        return _query(self._federated, sql)

    def single_sql(self, sql: str) -> pa.Table:
        """The answer of the one cluster holding all rows."""
        if self._single is None:
            raise RuntimeError("this federation was started without the single cluster")
        return _query(self._single, sql)

    def connect_federated(self) -> Any:
        """A new ADBC connection to the coordinator (one per thread for concurrent clients);
        closed with the federation at the latest."""
        return self._connect(COORDINATOR)

    def explain(self, sql: str) -> str:
        """EXPLAIN (VERBOSE) on the coordinator: each foreign scan's `Remote SQL` shows what
        the stores were asked."""
        with self._federated.cursor() as cursor:
            # ADBC runs a query as COPY (...) TO STDOUT by default, which EXPLAIN is not.
            cursor.adbc_statement.set_options(**{StatementOptions.USE_COPY.value: "false"})
            cursor.execute(f"EXPLAIN (VERBOSE) {sql}")
            return "\n".join(str(line) for (line,) in cursor.fetchall())

    def peak_mib(self, cluster: str | None = None) -> float:
        """Peak memory in MiB of one cluster, or the sum over all clusters this started.

        Per cluster: the sum over its live processes (postmaster and children) of each one's
        peak resident memory (VmHWM) less the shared memory it maps now (RssShmem), plus the
        most shared memory one of them maps, so shared buffers count once. Processes that
        ended already (closed connections) are not counted; the federation's own connections
        stay open, so their backends are.
        """
        names = [cluster] if cluster else list(self.clusters)
        children = _children_by_parent()
        total_kib = 0
        for name in names:
            pid = self.clusters[name].postmaster_pid
            if pid is None:
                continue
            shared = 0
            for process in [pid, *children.get(pid, [])]:
                status = _memory_kib(process)
                total_kib += max(0, status.get("VmHWM", 0) - status.get("RssShmem", 0))
                shared = max(shared, status.get("RssShmem", 0))
            total_kib += shared
        return total_kib / 1024

    def _connect(self, name: str) -> Any:
        connection = postgres.connect(self.clusters[name].url, autocommit=True)
        self._connections.append(connection)
        return connection

    def _start_clusters(self) -> None:
        names = [*self.stores, HQ, COORDINATOR, *([SINGLE] if self.single else [])]
        if self.parent is not None:
            self.parent.mkdir(parents=True, exist_ok=True)
        ports = set()
        for name in names:
            settings = {**self.settings, **(PARTITIONWISE if name == COORDINATOR else {})}
            server = PostgresServer(settings=settings, parent=self.parent)
            while server.port in ports:  # free ports are picked one by one: never twice
                server.stop()
                server = PostgresServer(settings=settings, parent=self.parent)
            ports.add(server.port)
            self.clusters[name] = server

        def start(name: str) -> None:
            if self._closing.is_set():
                return
            started = time.perf_counter()
            self.clusters[name].start()
            seconds = time.perf_counter() - started
            self.progress(f"  started {name} on port {self.clusters[name].port} ({seconds:.1f} s)")

        # A start takes seconds: on failure wait for those under way, so none outlives _stop.
        self._in_parallel([lambda n=name: start(n) for name in names], wait_on_failure=True)

    def _load(self) -> None:
        tasks = [
            lambda s=store: self._load_table(s, "orders", [self.files[s]], "order_id")
            for store in self.stores
        ]
        tasks.append(lambda: self._load_table(HQ, "catalogue", [self.files[HQ]], "product_id"))
        if self.single:
            # The longest load goes first, so the stores' loads run beside it.
            every_store = [self.files[s] for s in self.stores]
            tasks.insert(0, lambda: self._load_table(SINGLE, "orders", every_store, "order_id"))
            tasks.append(
                lambda: self._load_table(SINGLE, "catalogue", [self.files[HQ]], "product_id")
            )
        # A load can take minutes: on failure stop the clusters at once, which ends it.
        self._in_parallel(tasks, wait_on_failure=False)

    def _load_table(self, name: str, table: str, paths: list[Path], key: str) -> None:
        started = time.perf_counter()
        rows = 0
        # One transaction: with wal_level minimal, COPY into a table created in it skips WAL.
        with postgres.connect(self.clusters[name].url) as connection, connection.cursor() as cursor:
            for index, path in enumerate(paths):
                with pq.ParquetFile(path) as parquet:
                    mode = "create" if index == 0 else "append"
                    cursor.adbc_ingest(table, _batches(parquet), mode=mode)
                    rows += parquet.metadata.num_rows
            loaded = time.perf_counter() - started
            cursor.execute(f"ALTER TABLE {table} ADD PRIMARY KEY ({key})")
            connection.commit()
            cursor.execute(f"ANALYZE {table}")
            connection.commit()
        indexed = time.perf_counter() - started - loaded
        self.progress(
            f"  loaded {rows:,} rows into {name}.{table} in {loaded:.1f} s "
            f"({rows / loaded:,.0f} rows/s), primary key and ANALYZE {indexed:.1f} s"
        )

    def _build_coordinator(self) -> None:
        started = time.perf_counter()
        orders_columns = _column_definitions(self.clusters[self.stores[0]], "orders")
        catalogue_columns = _column_definitions(self.clusters[HQ], "catalogue")
        statements = ["CREATE EXTENSION postgres_fdw"]
        for name in [*self.stores, HQ]:
            server = self.clusters[name]
            options = {"host": "127.0.0.1", "port": str(server.port), "dbname": "postgres"}
            statements += [
                f"CREATE SERVER {_ident(name)} FOREIGN DATA WRAPPER postgres_fdw "
                f"OPTIONS ({_options({**options, **FDW_OPTIONS})})",
                f"CREATE USER MAPPING FOR CURRENT_USER SERVER {_ident(name)} "
                f"OPTIONS ({_options({'user': server.user, 'password': server.password})})",
            ]
        statements.append(f"CREATE TABLE orders ({orders_columns}) PARTITION BY LIST (store)")
        for store in self.stores:
            statements.append(
                f"CREATE FOREIGN TABLE {_ident('orders_' + store)} PARTITION OF orders "
                f"FOR VALUES IN ({_literal(store)}) SERVER {_ident(store)} "
                f"OPTIONS (schema_name 'public', table_name 'orders')"
            )
        statements += [
            f"CREATE FOREIGN TABLE catalogue ({catalogue_columns}) SERVER {_ident(HQ)} "
            "OPTIONS (schema_name 'public', table_name 'catalogue')",
            # Foreign tables are analyzed only when named; PostgreSQL 15's postgres_fdw reads
            # every row of each to sample them (and once more for the partitioned parent).
            "ANALYZE orders, catalogue",
        ]
        with self._connect(COORDINATOR).cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)
        seconds = time.perf_counter() - started
        self.progress(
            f"  coordinator: orders partitioned over {len(self.stores)} foreign tables, "
            f"catalogue on {HQ}, ANALYZE ({seconds:.1f} s)"
        )

    def _in_parallel(self, tasks: list[Callable[[], None]], *, wait_on_failure: bool) -> None:
        pool = ThreadPoolExecutor(max_workers=PARALLEL, thread_name_prefix="postgres-peer")
        try:
            for future in [pool.submit(task) for task in tasks]:
                future.result()
        except BaseException:
            self._closing.set()
            pool.shutdown(wait=wait_on_failure, cancel_futures=True)
            raise
        pool.shutdown()

    def _catch_sigterm(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous_sigterm = signal.signal(signal.SIGTERM, _exit_on_sigterm)

    def _stop(self) -> None:
        """Stop every cluster this started; a second Ctrl-C meanwhile is ignored, as giving
        in to it would leave clusters running."""
        main = threading.current_thread() is threading.main_thread()
        previous_sigint = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
        try:
            self._closing.set()
            for connection in self._connections:
                with contextlib.suppress(Exception):  # its cluster may be gone already
                    connection.close()
            self._connections.clear()
            if self.clusters:
                with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
                    list(pool.map(PostgresServer.stop, self.clusters.values()))
                self.progress(f"  stopped {len(self.clusters)} PostgreSQL clusters")
        finally:
            if main:
                signal.signal(signal.SIGINT, previous_sigint)
                if self._previous_sigterm is not None:
                    signal.signal(signal.SIGTERM, self._previous_sigterm)
                    self._previous_sigterm = None


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def _batches(parquet: pq.ParquetFile) -> pa.RecordBatchReader:
    """A Parquet file's rows in batches, so a big file never sits in memory at once."""
    batches = parquet.iter_batches(batch_size=BATCH_ROWS)
    return pa.RecordBatchReader.from_batches(parquet.schema_arrow, batches)


def _query(connection: Any, sql: str) -> pa.Table:
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetch_arrow_table()


def _column_definitions(server: PostgresServer, table: str) -> str:
    """A table's columns with their exact types, as CREATE TABLE takes them."""
    with postgres.connect(server.url, autocommit=True) as connection:
        columns = _query(
            connection,
            "SELECT attname, format_type(atttypid, atttypmod) AS kind FROM pg_attribute "
            f"WHERE attrelid = {_literal(table)}::regclass AND attnum > 0 AND NOT attisdropped "
            "ORDER BY attnum",
        )
    return ", ".join(f"{_ident(row['attname'])} {row['kind']}" for row in columns.to_pylist())


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _options(options: dict[str, str]) -> str:
    return ", ".join(f"{name} {_literal(value)}" for name, value in options.items())


def _children_by_parent() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # it ended meanwhile
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    return children


def _memory_kib(pid: int) -> dict[str, int]:
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    return {
        key: int(rest.split()[0])
        for key, _, rest in (line.partition(":") for line in lines)
        if key in ("VmHWM", "RssShmem")
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=2_500_000, help="orders per store")
    parser.add_argument(
        "--stores", type=int, default=len(STORES), help=f"store clusters (1-{len(STORES)})"
    )
    parser.add_argument("--runs", type=int, default=5, help="timed runs per query and system")
    parser.add_argument("--quick", action="store_true", help="3 stores x 20,000 rows, 2 runs")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR, help="where data is cached")
    parser.add_argument(
        "--cluster-dir",
        type=Path,
        default=None,
        help="where the clusters live (the system's temporary folder by default)",
    )
    parser.add_argument("--no-single", action="store_true", help="skip the single cluster")
    parser.add_argument("--explain", action="store_true", help="print each query's plan")
    args = parser.parse_args(argv)
    if not 1 <= args.stores <= len(STORES):
        parser.error(f"--stores takes 1 to {len(STORES)}")
    stores, rows, runs = (
        (STORES[:3], 20_000, 2) if args.quick else (STORES[: args.stores], args.rows, args.runs)
    )
    files = store_files(stores, rows, args.data_dir)
    lookup_id = rows * len(stores) // 2 + 17
    print(f"postgres_fdw peer: {len(stores)} stores x {rows:,} orders, {runs} runs per query")
    try:
        _compare_and_time(files, stores, lookup_id, runs, args)
    except KeyboardInterrupt:
        print("interrupted; every cluster it started is stopped", file=sys.stderr)
        return 130
    return 0


def _compare_and_time(
    files: dict[str, Path],
    stores: tuple[str, ...],
    lookup_id: int,
    runs: int,
    args: argparse.Namespace,
) -> None:
    """Check each query's answers against DuckDB's over the same files, then time them."""
    duck = duckdb.connect()
    sources = ", ".join(f"'{files[s]}'" for s in stores)
    duck.execute(f"CREATE VIEW orders AS SELECT * FROM read_parquet([{sources}])")
    duck.execute(f"CREATE VIEW catalogue AS SELECT * FROM read_parquet('{files[HQ]}')")
    single = not args.no_single
    started = time.perf_counter()
    with PostgresFederation(files, single=single, parent=args.cluster_dir) as federation:
        print(f"  federation ready in {time.perf_counter() - started:.1f} s")
        systems: dict[str, Callable[[str], Any]] = {"postgres_fdw": federation.federated_sql}
        if single:
            systems["single postgres"] = federation.single_sql
        for name, (_, duck_sql, _, _) in QUERIES.items():
            ours = POSTGRES_QUERIES[name].format(order_id=lookup_id)
            theirs = duck_sql.format(order_id=lookup_id)
            want = duck.sql(theirs).to_arrow_table()
            for system, run in systems.items():
                problem = first_difference(want, run(ours), ordered="ORDER BY" in theirs)
                if problem:
                    raise SystemExit(f"{name}: {system}'s answer differs from DuckDB's: {problem}")
            if args.explain:
                print(f"  {name}, the coordinator's plan:\n{federation.explain(ours)}")
            timings: dict[str, list[float]] = {system: [] for system in [*systems, "duckdb"]}
            for _ in range(runs):
                for system, run in systems.items():
                    t0 = time.perf_counter()
                    run(ours)
                    timings[system].append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                duck.sql(theirs).to_arrow_table()
                timings["duckdb"].append(time.perf_counter() - t0)
            medians = ", ".join(
                f"{system} {statistics.median(times) * 1000:.1f} ms"
                for system, times in timings.items()
            )
            print(f"  {name}: {medians}")
        peaks = ", ".join(
            f"{cluster} {federation.peak_mib(cluster):,.0f}" for cluster in federation.clusters
        )
        print(f"  peak memory (MiB): all clusters {federation.peak_mib():,.0f}; {peaks}")


if __name__ == "__main__":
    raise SystemExit(main())
