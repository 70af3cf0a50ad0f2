"""Federated SQL over four node processes, beside one DuckDB holding all rows in one table.

Four `shoal serve` processes on loopback each own an `orders` product of `--rows` order lines;
the benchmark asks node 1 (the coordinator) over HTTP, exactly as a client would, and asks
DuckDB in this process the same question over the same rows loaded into one table. Every
answer is compared with the peer's before any figure is kept. This is the baseline that the
pushdown issue improves; there is no target yet.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import duckdb

import shoal
from shoal.localmesh import LocalMesh
from shoal.node import Node
from shoal.results import first_difference
from shoal.sampledata import orders_sql

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA_DIR, RESULTS, machine, max_rss_self_mib, stats, write_section

STORES = ("berlin", "hamburg", "munich", "vienna")

QUERIES = {
    "revenue by store": (
        "SELECT _node AS store, count(*) AS orders, round(sum(amount), 2) AS revenue "
        "FROM orders GROUP BY 1 ORDER BY 1",
        "SELECT store, count(*) AS orders, round(sum(amount), 2) AS revenue "
        "FROM orders GROUP BY 1 ORDER BY 1",
    ),
    "one-order lookup": (
        "SELECT order_id, customer_id, sku, amount FROM orders WHERE order_id = {order_id}",
        "SELECT order_id, customer_id, sku, amount FROM orders WHERE order_id = {order_id}",
    ),
}


def store_files(rows: int, data_dir: Path) -> dict[str, Path]:
    """One Parquet file of `rows` orders per store (cached); order ids unique across stores."""
    folder = data_dir / f"federated-{rows}"
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    with duckdb.connect() as con:
        for index, store in enumerate(STORES):
            path = folder / f"{store}.parquet"
            if not path.exists():
                partial = path.with_suffix(".partial")
                con.execute(
                    f"COPY (SELECT * REPLACE (order_id + {index * rows} AS order_id, "
                    f"'{store}' AS store) FROM ({orders_sql(rows, seed=11 + index)})) "
                    f"TO '{partial}' (FORMAT parquet)"
                )
                partial.rename(path)
            files[store] = path
    return files


def node_peak_mib(pid: int) -> float:
    """A process's peak resident memory (VmHWM) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000, help="orders per node")
    parser.add_argument("--runs", type=int, default=7, help="timed runs per query and system")
    parser.add_argument("--quick", action="store_true", help="small data, 2 runs (smoke test)")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR, help="where data is cached")
    parser.add_argument("--results", type=Path, default=None, help="RESULTS.md to update")
    args = parser.parse_args(argv)
    rows, runs = (20_000, 2) if args.quick else (args.rows, args.runs)
    results = args.results or (None if args.quick else RESULTS)
    files = store_files(rows, args.data_dir)
    total = rows * len(STORES)
    lookup_id = total // 2 + 17
    print(f"federated benchmark: {len(STORES)} nodes x {rows:,} orders, {runs} runs per query")

    peer = duckdb.connect()
    sources = ", ".join(f"'{p}'" for p in files.values())
    peer.execute(f"CREATE TABLE orders AS SELECT * FROM read_parquet([{sources}])")

    timings: dict[str, dict[str, list[float]]] = {q: {"shoal": [], "duckdb": []} for q in QUERIES}
    cached: list[float] = []
    args.data_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="shoal-fed-", dir=args.data_dir) as tmp:
        mesh = LocalMesh(Path(tmp) / "mesh")
        try:
            mesh.start([(store, "eu-de") for store in STORES], progress=print)
            started = time.perf_counter()
            for store, path in files.items():
                Node.open(mesh.root / store).publish("orders", str(path))
            print(f"  published {total:,} rows in {time.perf_counter() - started:.1f} s")
            mesh.wait_for_catalog({f"{s}.orders" for s in STORES}, timeout=60)
            # The timed coordinator runs without the fragment cache, so every run asks the
            # nodes; a second coordinator with the cache measures a dashboard's repeat.
            coordinator = mesh.nodes[STORES[0]]
            coordinator.stop()
            settings = coordinator.home / "settings.yaml"
            settings.write_text(settings.read_text() + "fragment_cache_mb: 0\n")
            coordinator.start()
            mesh.wait_for_catalog({f"{s}.orders" for s in STORES}, timeout=60)
            with shoal.connect(coordinator.http) as client:
                for name, (shoal_sql, peer_sql) in QUERIES.items():
                    ours = shoal_sql.format(order_id=lookup_id)
                    theirs = peer_sql.format(order_id=lookup_id)
                    want = peer.sql(theirs).to_arrow_table()
                    got = client.sql(ours).arrow()
                    problem = first_difference(want, got, ordered="ORDER BY" in theirs)
                    if problem:
                        raise SystemExit(f"{name}: shoal's answer differs from DuckDB's: {problem}")
                    for _ in range(runs):
                        t0 = time.perf_counter()
                        client.sql(ours)
                        timings[name]["shoal"].append(time.perf_counter() - t0)
                        t0 = time.perf_counter()
                        peer.sql(theirs).to_arrow_table()
                        timings[name]["duckdb"].append(time.perf_counter() - t0)
                    ours_ms = statistics.median(timings[name]["shoal"]) * 1000
                    theirs_ms = statistics.median(timings[name]["duckdb"]) * 1000
                    print(f"  {name}: shoal {ours_ms:.1f} ms, duckdb {theirs_ms:.1f} ms")
            cached_sql = QUERIES["revenue by store"][0]
            with shoal.connect(mesh.nodes[STORES[1]].http) as client:
                client.sql(cached_sql)  # fills the cache
                for _ in range(runs):
                    t0 = time.perf_counter()
                    client.sql(cached_sql)
                    cached.append(time.perf_counter() - t0)
            node_peaks = {
                name: node_peak_mib(node.process.pid)
                for name, node in mesh.nodes.items()
                if node.process is not None
            }
        finally:
            mesh.stop()
    peer_peak = max_rss_self_mib()

    lines = [
        "| query | shoal median ms | min | max | duckdb median ms | min | max "
        "| ratio shoal/duckdb |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in QUERIES:
        ours_s = stats([t * 1000 for t in timings[name]["shoal"]])
        theirs_s = stats([t * 1000 for t in timings[name]["duckdb"]])
        ratio = ours_s["median"] / theirs_s["median"]
        lines.append(
            f"| {name} | {ours_s['median']:.1f} | {ours_s['min']:.1f} | {ours_s['max']:.1f} | "
            f"{theirs_s['median']:.1f} | {theirs_s['min']:.1f} | {theirs_s['max']:.1f} | "
            f"{ratio:.1f}x |"
        )
    repeat = stats([t * 1000 for t in cached])
    theirs_q1 = statistics.median(timings["revenue by store"]["duckdb"]) * 1000
    lines.append(
        f"| revenue by store, repeated (exact cache at the coordinator) | {repeat['median']:.1f} | "
        f"{repeat['min']:.1f} | {repeat['max']:.1f} | {theirs_q1:.1f} | | | "
        f"{repeat['median'] / theirs_q1:.1f}x |"
    )
    peaks = ", ".join(f"{n} {m:,.0f}" for n, m in node_peaks.items())
    body = f"""## Federated SQL (issue 4, the baseline)

`bench/federated.py --rows {rows} --runs {runs}`: {len(STORES)} `shoal serve` processes on
loopback with {rows:,} orders each; each query is asked at `{STORES[0]}` over HTTP (Arrow
IPC) with its fragment cache off, so every run asks the nodes, beside DuckDB in the
benchmark process over the same {total:,} rows in one in-memory table. The repeat row asks
`{STORES[1]}`, whose cache is on, after one filling run. Answers are checked equal first.
Medians of {runs} interleaved runs after one untimed run. Machine: {machine()}.

{chr(10).join(lines)}

Peak memory (MiB): nodes {peaks}; the benchmark process with DuckDB's table {peer_peak:,.0f}.
Since the first baseline (8.2-8.6x and 89-94x), partial aggregation and top-N run at the
nodes and fragments expose only their own product; the pushdown issue's full benchmark (8
nodes, 20 million rows, six queries) is still to come.
"""
    print(body)
    if results is not None:
        write_section("federated", body, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
