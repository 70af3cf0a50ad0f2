"""Shoal beside one centralized DuckDB and a PostgreSQL postgres_fdw federation: the same
queries on the same rows, how each grows with nodes and rows, and under concurrent clients.

Three parts, one run:

1. The main point, `--stores` (8) store nodes of `--rows` orders each (2.5 million: 20
   million in all). Shoal: `shoal serve` processes on loopback with the default security
   (mutual TLS, signed requests), asked at the coordinator `hq` over HTTPS with its caches
   off. DuckDB: one in-memory table of all rows in this process, the floor no federation
   can beat on one machine. postgres_fdw: one PostgreSQL cluster per store, one for the
   catalogue and a coordinator whose partitioned `orders` has a foreign table per store
   (see bench/postgres_peer.py), and one PostgreSQL holding every row. Q1-Q6 of the
   pushdown issue; every system's answer is compared with DuckDB's before anything is
   timed; then `--runs` runs interleaved between the systems, after that untimed check.
2. Concurrency at the main point: 1, 4 and 16 clients, each with its own connection,
   running Q1-Q4 in turn for `--concurrency-seconds` against Shoal's coordinator and
   against PostgreSQL's: throughput, p50/p99 latency and errors.
3. Scale curves of Q1, Q3 and Q5 (the plotted queries; the others only at the main point):
   nodes 1, 2, 4, 8, 16 at `--curve-rows` in all, and 1, 5, 20, 50 million rows at 8
   nodes (`--max-rows` drops the larger steps; the report says which). Each point brings
   up one system at a time (so the largest fits in memory), checks its answers against
   DuckDB's and times `--runs` runs. PNG plots go to bench/plots/.

Data: `federated.store_files` (the same seed per store index, so every system and run
reads the same rows); it is cached under `--data-dir`.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa

from shoal.localmesh import LocalMesh
from shoal.results import first_difference

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BENCH_DIR, DATA_DIR, RESULTS, machine, max_rss_self_mib, stats, write_section
from federated import HQ, QUERIES, STORES, node_peak_mib, start_mesh, store_files
from postgres_peer import POSTGRES_QUERIES, PostgresFederation

# Sixteen store names: the federated benchmark's eight and eight more for the widest point.
STORE_NAMES = (
    *STORES,
    *("dresden", "bremen", "hanover", "linz", "basel", "bonn", "kiel", "mainz"),
)
CURVE_QUERIES = [q for q in QUERIES if q.split()[0] in {"Q1", "Q3", "Q5"}]
MIX = [q for q in QUERIES if q.split()[0] in {"Q1", "Q2", "Q3", "Q4"}]
SHOAL, DUCKDB, FDW, SINGLE = "shoal", "duckdb", "postgres_fdw", "postgresql (one server)"
PLOTTED = (SHOAL, DUCKDB, FDW)
PLOTS = BENCH_DIR / "plots"
# Targets of the issue, checked by reading the report.
FDW_SPEEDUP, DUCKDB_RATIO, NODES_GROWTH = 10.0, 1.5, 2.0

Ask = Callable[[str], pa.Table]


@dataclass
class Point:
    """One configuration's timings: query -> system -> seconds of each run."""

    stores: int
    rows: int
    seconds: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def median_ms(self, query: str, system: str) -> float | None:
        runs = self.seconds.get(query, {}).get(system)
        return statistics.median(runs) * 1000 if runs else None


def sql_of(system: str, query: str, lookup_id: int) -> str:
    if system == SHOAL:
        text = QUERIES[query][0]
    elif system == DUCKDB:
        text = QUERIES[query][1]
    else:
        text = POSTGRES_QUERIES[query]
    return text.format(order_id=lookup_id)


def lookup_id_of(total_rows: int) -> int:
    return total_rows // 2 + 17


# -- the systems, each brought up as a context that yields how to ask it -------------------


@contextmanager
def duckdb_system(files: dict[str, Path], stores: tuple[str, ...]) -> Iterator[Ask]:
    con = duckdb.connect()
    sources = ", ".join(f"'{files[s]}'" for s in stores)
    con.execute(f"CREATE TABLE orders AS SELECT * FROM read_parquet([{sources}])")
    con.execute(f"CREATE TABLE catalogue AS SELECT * FROM read_parquet('{files[HQ]}')")
    try:
        yield lambda sql: con.sql(sql).to_arrow_table()
    finally:
        con.close()
        gc.collect()


@contextmanager
def shoal_system(
    files: dict[str, Path], stores: tuple[str, ...], work: Path, peaks: dict[str, float]
) -> Iterator[tuple[LocalMesh, Ask]]:
    mesh = LocalMesh(work / f"shoal-{len(stores)}-{time.monotonic_ns()}")
    try:
        start_mesh(mesh, stores, files, progress=lambda line: print(f"  {line}", flush=True))
        with mesh.nodes[HQ].mesh() as client:
            yield mesh, lambda sql: client.sql(sql).arrow()
        process = mesh.nodes[HQ].process
        if process is not None:
            peaks["shoal coordinator"] = node_peak_mib(process.pid)
    finally:
        mesh.stop()


@contextmanager
def fdw_system(
    files: dict[str, Path], stores: tuple[str, ...], single: bool
) -> Iterator[PostgresFederation]:
    chosen = {name: files[name] for name in (*stores, HQ)}
    with PostgresFederation(
        chosen, single=single, progress=lambda line: print(line, flush=True)
    ) as federation:
        yield federation


# -- timing ---------------------------------------------------------------------------------


def check_answers(
    asks: dict[str, Ask], queries: list[str], lookup_id: int, reference: dict[str, pa.Table]
) -> None:
    """Every system's answer equals DuckDB's, or the benchmark stops: timing a wrong answer
    is void."""
    for query in queries:
        want = reference[query]
        for system, ask in asks.items():
            got = ask(sql_of(system, query, lookup_id))
            ordered = "ORDER BY" in sql_of(DUCKDB, query, lookup_id)
            problem = first_difference(want, got, ordered=ordered)
            if problem:
                raise SystemExit(f"{query}: {system}'s answer differs from DuckDB's: {problem}")


def time_runs(
    point: Point, asks: dict[str, Ask], queries: list[str], runs: int, lookup_id: int
) -> None:
    """`runs` timed runs of each query, interleaved between the systems given."""
    for query in queries:
        slot = point.seconds.setdefault(query, {})
        for _ in range(runs):
            for system, ask in asks.items():
                sql = sql_of(system, query, lookup_id)
                started = time.perf_counter()
                ask(sql)
                slot.setdefault(system, []).append(time.perf_counter() - started)
        shown = ", ".join(f"{system} {point.median_ms(query, system):.1f} ms" for system in asks)
        print(f"    {query}: {shown}", flush=True)


@dataclass
class Load:
    clients: int
    seconds: float
    latencies: list[float]
    errors: list[str]

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.seconds

    def percentile_ms(self, share: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))] * 1000


def run_load(
    connect: Callable[[], tuple[Ask, Callable[[], None]]],
    system: str,
    clients: int,
    seconds: float,
    lookup_id: int,
) -> Load:
    """`clients` threads, each with its own connection, running the mix in turn (each
    starting at a different query) until `seconds` have passed."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    ready = threading.Barrier(clients + 1)
    stop_at: list[float] = []

    def client(index: int) -> None:
        ask, close = connect()
        try:
            ready.wait()
            turn = index
            while time.perf_counter() < stop_at[0]:
                sql = sql_of(system, MIX[turn % len(MIX)], lookup_id)
                turn += 1
                started = time.perf_counter()
                try:
                    ask(sql)
                except Exception as exc:  # every failure is counted and shown
                    with lock:
                        errors.append(f"{type(exc).__name__}: {exc}"[:200])
                    continue
                with lock:
                    latencies.append(time.perf_counter() - started)
        finally:
            close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    stop_at.append(time.perf_counter() + seconds)
    began = time.perf_counter()
    ready.wait()
    for thread in threads:
        thread.join(timeout=seconds + 600)
    return Load(clients, time.perf_counter() - began, latencies, errors)


# -- the three parts ------------------------------------------------------------------------


def main_point(
    args: argparse.Namespace, work: Path, peaks: dict[str, float]
) -> tuple[Point, list[Load], list[Load]]:
    stores = STORE_NAMES[: args.stores]
    files = store_files(stores, args.rows, args.data_dir)
    total = args.rows * len(stores)
    lookup_id = lookup_id_of(total)
    point = Point(len(stores), total)
    queries = list(QUERIES)
    print(f"main point: {len(stores)} stores x {args.rows:,} orders", flush=True)
    with ExitStack() as stack:
        duck = stack.enter_context(duckdb_system(files, stores))
        reference = {q: duck(sql_of(DUCKDB, q, lookup_id)) for q in queries}
        mesh, shoal = stack.enter_context(shoal_system(files, stores, work, peaks))
        federation = stack.enter_context(fdw_system(files, stores, single=True))
        asks = {
            SHOAL: shoal,
            DUCKDB: duck,
            FDW: federation.federated_sql,
            SINGLE: federation.single_sql,
        }
        check_answers({k: v for k, v in asks.items() if k != DUCKDB}, queries, lookup_id, reference)
        time_runs(point, asks, queries, args.runs, lookup_id)
        shoal_loads, fdw_loads = [], []
        for clients in args.clients:
            for system, loads in ((SHOAL, shoal_loads), (FDW, fdw_loads)):
                connect = shoal_connector(mesh) if system == SHOAL else fdw_connector(federation)
                load = run_load(connect, system, clients, args.concurrency_seconds, lookup_id)
                loads.append(load)
                print(
                    f"    {system}, {clients} clients: {load.throughput:.2f} queries/s, "
                    f"p50 {load.percentile_ms(0.5):.0f} ms, p99 {load.percentile_ms(0.99):.0f}"
                    f" ms, {len(load.errors)} errors",
                    flush=True,
                )
        peaks["postgres_fdw coordinator"] = federation.peak_mib("coordinator")
        peaks["all PostgreSQL clusters"] = federation.peak_mib()
    peaks["benchmark process (DuckDB)"] = max_rss_self_mib()
    return point, shoal_loads, fdw_loads


def shoal_connector(mesh: LocalMesh) -> Callable[[], tuple[Ask, Callable[[], None]]]:
    def connect() -> tuple[Ask, Callable[[], None]]:
        client = mesh.nodes[HQ].mesh()
        return (lambda sql: client.sql(sql).arrow()), client.close

    return connect


def fdw_connector(
    federation: PostgresFederation,
) -> Callable[[], tuple[Ask, Callable[[], None]]]:
    def connect() -> tuple[Ask, Callable[[], None]]:
        connection = federation.connect_federated()

        def ask(sql: str) -> pa.Table:
            with connection.cursor() as cursor:
                cursor.execute(sql)
                return cursor.fetch_arrow_table()

        return ask, connection.close

    return connect


def curve_point(
    stores: int,
    total: int,
    args: argparse.Namespace,
    work: Path,
    done: dict[tuple[int, int], Point],
) -> Point:
    """Q1, Q3 and Q5 at one configuration, one system up at a time; reuses a measured one."""
    if (stores, total) in done:
        return done[(stores, total)]
    names = STORE_NAMES[:stores]
    files = store_files(names, total // stores, args.data_dir)
    lookup_id = lookup_id_of(total // stores * stores)
    point = Point(stores, total // stores * stores)
    print(f"curve point: {stores} stores x {total // stores:,} orders", flush=True)
    with duckdb_system(files, names) as duck:
        reference = {q: duck(sql_of(DUCKDB, q, lookup_id)) for q in CURVE_QUERIES}
        time_runs(point, {DUCKDB: duck}, CURVE_QUERIES, args.runs, lookup_id)
    with shoal_system(files, names, work, {}) as (_, shoal):
        check_answers({SHOAL: shoal}, CURVE_QUERIES, lookup_id, reference)
        time_runs(point, {SHOAL: shoal}, CURVE_QUERIES, args.runs, lookup_id)
    with fdw_system(files, names, single=False) as federation:
        check_answers({FDW: federation.federated_sql}, CURVE_QUERIES, lookup_id, reference)
        time_runs(point, {FDW: federation.federated_sql}, CURVE_QUERIES, args.runs, lookup_id)
    done[(stores, total)] = point
    return point


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--stores", type=int, default=8, help="store nodes at the main point")
    parser.add_argument("--rows", type=int, default=2_500_000, help="orders per store there")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per query and system")
    parser.add_argument(
        "--clients", type=_counts, default=[1, 4, 16], help="concurrent clients, e.g. 1,4,16"
    )
    parser.add_argument(
        "--concurrency-seconds", type=float, default=60.0, help="how long each load runs"
    )
    parser.add_argument(
        "--curve-nodes", type=_counts, default=[1, 2, 4, 8, 16], help="nodes of the curve"
    )
    parser.add_argument(
        "--curve-rows", type=int, default=8_000_000, help="rows in all on the nodes curve"
    )
    parser.add_argument(
        "--curve-sizes",
        type=_counts,
        default=[1_000_000, 5_000_000, 20_000_000, 50_000_000],
        help="rows in all on the rows curve (at --stores nodes)",
    )
    parser.add_argument(
        "--max-rows", type=int, default=50_000_000, help="skip rows-curve steps above this"
    )
    parser.add_argument("--no-curves", action="store_true", help="only the main point")
    parser.add_argument("--quick", action="store_true", help="seconds, small data, for tests")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR, help="where data is cached")
    parser.add_argument("--results", type=Path, default=None, help="RESULTS.md to update")
    parser.add_argument("--plots", type=Path, default=None, help="where the PNG plots go")
    args = parser.parse_args(argv)
    if args.quick:
        args.stores, args.rows, args.runs = 2, 10_000, 2
        args.clients, args.concurrency_seconds = [1, 2], 2.0
        args.curve_nodes, args.curve_rows = [1, 2], 20_000
        args.curve_sizes, args.max_rows = [10_000, 20_000], 20_000
    if max(args.curve_nodes) > len(STORE_NAMES) or args.stores > len(STORE_NAMES):
        parser.error(f"at most {len(STORE_NAMES)} store nodes")
    results = args.results or (None if args.quick else RESULTS)
    plots = args.plots or (args.data_dir / "plots" if args.quick else PLOTS)
    args.data_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    peaks: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="shoal-compare-", dir=args.data_dir) as tmp:
        work = Path(tmp)
        main, shoal_loads, fdw_loads = main_point(args, work, peaks)
        done = {(main.stores, main.rows): main}
        nodes_curve: list[Point] = []
        rows_curve: list[Point] = []
        skipped = [size for size in args.curve_sizes if size > args.max_rows]
        if not args.no_curves:
            for stores in args.curve_nodes:
                nodes_curve.append(curve_point(stores, args.curve_rows, args, work, done))
            for size in args.curve_sizes:
                if size <= args.max_rows:
                    rows_curve.append(curve_point(args.stores, size, args, work, done))
    links = plot_curves(nodes_curve, rows_curve, plots) if nodes_curve or rows_curve else []
    elapsed = time.perf_counter() - started
    body = report(args, main, shoal_loads, fdw_loads, nodes_curve, rows_curve, skipped, peaks)
    body += _plot_links(links, results)
    body += f"\nThe whole run took {elapsed / 60:.1f} minutes.\n"
    print(body)
    if results is not None:
        write_section("compare", body, results)
    return 0


def _counts(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of whole numbers: {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"give positive whole numbers: {text!r}")
    return values


# -- the report -----------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def report(
    args: argparse.Namespace,
    main: Point,
    shoal_loads: list[Load],
    fdw_loads: list[Load],
    nodes_curve: list[Point],
    rows_curve: list[Point],
    skipped: list[int],
    peaks: dict[str, float],
) -> str:
    systems = (SHOAL, DUCKDB, FDW, SINGLE)
    lines = [
        "## Shoal, DuckDB and postgres_fdw side by side (issue 8)",
        "",
        f"`bench/compare.py --stores {args.stores} --rows {args.rows} --runs {args.runs}`: "
        f"{main.stores} store nodes x {args.rows:,} orders ({main.rows:,} in all). Shoal "
        "with its default security (mutual TLS between nodes, TLS and signed requests from "
        "the client), asked at `hq` with its caches off; DuckDB over one in-memory table in "
        "the benchmark process; postgres_fdw: a PostgreSQL cluster per store plus the "
        "catalogue's and a coordinator's, `orders` partitioned by store over foreign "
        "tables (bench/postgres_peer.py); and one PostgreSQL holding every row. Answers "
        "checked equal first; medians of "
        f"{args.runs} runs interleaved between the systems after that untimed check. "
        f"Machine: {machine()}.",
        "",
        "| query | "
        + " | ".join(f"{s} median ms (min-max)" for s in systems)
        + " | shoal/duckdb | postgres_fdw/shoal |",
        "|---|" + "---|" * (len(systems) + 2),
    ]
    for query in QUERIES:
        cells = []
        for system in systems:
            runs = main.seconds[query][system]
            figures = stats([t * 1000 for t in runs])
            cells.append(f"{figures['median']:,.1f} ({figures['min']:,.1f}-{figures['max']:,.1f})")
        shoal = main.median_ms(query, SHOAL) or float("nan")
        duck = main.median_ms(query, DUCKDB) or float("nan")
        fdw = main.median_ms(query, FDW) or float("nan")
        short = query.split()[0]
        duck_verdict = ""
        fdw_verdict = ""
        if short in {"Q1", "Q2", "Q3", "Q5"}:
            duck_verdict = f" ({'met' if shoal / duck <= DUCKDB_RATIO else 'MISSED'} ≤ 1.5x)"
        if short in {"Q1", "Q2", "Q3"}:
            fdw_verdict = f" ({'met' if fdw / shoal >= FDW_SPEEDUP else 'MISSED'} ≥ 10x)"
        lines.append(
            f"| {query} | {' | '.join(cells)} | {shoal / duck:.2f}x{duck_verdict} | "
            f"{fdw / shoal:.1f}x{fdw_verdict} |"
        )
    lines += [
        "",
        "Peak memory (MiB): "
        + ", ".join(f"{name} {value:,.0f}" for name, value in peaks.items())
        + ". Security on against off for Shoal: the security section below, same `make bench`.",
        "",
        f"**Concurrency** at the main point: each client its own connection, Q1-Q4 in turn "
        f"for {args.concurrency_seconds:.0f} s.",
        "",
        "| system | clients | queries/s | p50 ms | p99 ms | errors |",
        "|---|---|---|---|---|---|",
    ]
    for system, loads in ((SHOAL, shoal_loads), (FDW, fdw_loads)):
        for load in loads:
            lines.append(
                f"| {system} | {load.clients} | {load.throughput:.2f} | "
                f"{load.percentile_ms(0.5):,.0f} | {load.percentile_ms(0.99):,.0f} | "
                f"{len(load.errors)}{': ' + load.errors[0] if load.errors else ''} |"
            )
    errors_at_most = max((len(x.errors) for x in shoal_loads if x.clients >= 16), default=None)
    if errors_at_most is not None:
        verdict = "met" if errors_at_most == 0 else "MISSED"
        lines.append(f"\nNo errors under 16 concurrent clients (Shoal): {verdict}.")
    for title, curve, axis in (
        (f"nodes at {args.curve_rows:,} rows in all", nodes_curve, "nodes"),
        (f"rows at {args.stores} nodes", rows_curve, "rows"),
    ):
        if not curve:
            continue
        lines += ["", f"**Scale: {title}** (median ms)", ""]
        header = [f"{q.split()[0]} {s}" for q in CURVE_QUERIES for s in PLOTTED]
        lines += ["| " + axis + " | " + " | ".join(header) + " |", "|---|" + "---|" * len(header)]
        for point in curve:
            key = point.stores if axis == "nodes" else f"{point.rows:,}"
            cells = [_ms(point.median_ms(q, s)) for q in CURVE_QUERIES for s in PLOTTED]
            lines.append(f"| {key} | " + " | ".join(cells) + " |")
        lines.append("")
        lines.append(_growth(curve, axis))
    if skipped:
        lines.append(
            f"\nSkipped rows-curve steps (`--max-rows {args.max_rows:,}`): "
            + ", ".join(f"{s:,}" for s in skipped)
            + "."
        )
    return "\n".join(lines) + "\n"


def _growth(curve: list[Point], axis: str) -> str:
    """Shoal's growth along a curve, judged against the issue's targets."""
    first, last = curve[0], curve[-1]
    parts = []
    for query in CURVE_QUERIES:
        start, end = first.median_ms(query, SHOAL), last.median_ms(query, SHOAL)
        if not start or not end:
            continue
        growth = end / start
        if axis == "nodes":
            verdict = "met" if growth <= NODES_GROWTH else "MISSED"
            parts.append(f"{query.split()[0]} {growth:.2f}x ({verdict} ≤ 2x)")
        else:
            rows_growth = last.rows / first.rows
            verdict = "met" if growth <= rows_growth else "MISSED"
            parts.append(
                f"{query.split()[0]} {growth:.2f}x for {rows_growth:.0f}x rows ({verdict})"
            )
    where = (
        f"from {first.stores} to {last.stores} nodes"
        if axis == "nodes"
        else f"from {first.rows:,} to {last.rows:,} rows"
    )
    return f"Shoal's latency {where}: " + "; ".join(parts) + "."


def plot_curves(nodes_curve: list[Point], rows_curve: list[Point], folder: Path) -> list[Path]:
    """One PNG per curve: latency of Q1, Q3 and Q5 for each system."""
    import matplotlib

    matplotlib.use("Agg")  # no display here, and no window wanted
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, curve, label in (
        ("scale-nodes.png", nodes_curve, "store nodes"),
        ("scale-rows.png", rows_curve, "rows in all (millions)"),
    ):
        if not curve:
            continue
        figure, axes = plt.subplots(1, len(CURVE_QUERIES), figsize=(12, 4), sharey=False)
        for axis, query in zip(axes, CURVE_QUERIES, strict=True):
            for system in PLOTTED:
                xs = [p.stores if "nodes" in name else p.rows / 1e6 for p in curve]
                ys = [p.median_ms(query, system) for p in curve]
                axis.plot(xs, ys, marker="o", label=system)
            axis.set_title(query.split(" (")[0])
            axis.set_xlabel(label)
            axis.set_ylabel("median latency (ms)")
            axis.set_yscale("log")
            axis.set_xscale("log", base=2 if "nodes" in name else 10)
            axis.grid(True, which="both", alpha=0.3)
        axes[0].legend()
        figure.tight_layout()
        path = folder / name
        figure.savefig(path, dpi=100)
        plt.close(figure)
        written.append(path)
    return written


def _plot_links(links: list[Path], results: Path | None) -> str:
    if not links:
        return ""
    base = results.parent if results is not None else Path.cwd()
    shown = []
    for path in links:
        try:
            shown.append(f"![{path.stem}]({os.path.relpath(path, base)})")
        except ValueError:
            shown.append(f"![{path.stem}]({path})")
    return "\n" + "\n".join(shown) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
