"""Publish benchmark: `shoal publish` of a generated orders CSV beside DuckDB's own
CSV-to-Parquet COPY of the same file, in the same run.

Targets (issue 2): at least 0.5x DuckDB's rows/s with the contract check on; Shoal's peak
memory under 1.5 GiB.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import DATA_DIR, RESULTS, machine, python, run_child, stats, write_section
from shoal.sampledata import write_orders_csv

PEER = """
import sys, duckdb
con = duckdb.connect()
con.execute(f"COPY (SELECT * FROM read_csv('{sys.argv[1]}')) TO '{sys.argv[2]}' (FORMAT parquet)")
"""


def orders_file(rows: int, data_dir: Path, seed: int = 7) -> Path:
    path = data_dir / f"orders-{rows}-{seed}.csv"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        write_orders_csv(partial, rows, seed)
        partial.replace(path)
    return path


def shoal_once(csv: Path, scratch: Path) -> tuple[float, float]:
    home = scratch / "home"
    shutil.rmtree(home, ignore_errors=True)
    shoal = [python(), "-m", "shoal"]
    run_child([*shoal, "init", "--name", "bench", "--home", str(home)])
    run = run_child([*shoal, "publish", "orders", str(csv), "--quiet", "--home", str(home)])
    shutil.rmtree(home, ignore_errors=True)
    return run.seconds, run.peak_mib


def peer_once(csv: Path, scratch: Path) -> tuple[float, float]:
    target = scratch / "peer.parquet"
    run = run_child([python(), "-c", PEER, str(csv), str(target)])
    target.unlink(missing_ok=True)
    return run.seconds, run.peak_mib


def _row(name: str, rate: dict[str, float], mem: dict[str, float]) -> str:
    return (
        f"| {name} | {rate['median']:,.0f} | {rate['min']:,.0f} | {rate['max']:,.0f} "
        f"| {mem['median']:,.0f} | {mem['max']:,.0f} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=10_000_000, help="order lines in the CSV")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per system")
    parser.add_argument("--quick", action="store_true", help="small data, 1 run (a smoke test)")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR, help="where the CSV is cached")
    parser.add_argument(
        "--results",
        type=Path,
        default=None,
        help="RESULTS.md to update (full runs: bench/RESULTS.md)",
    )
    args = parser.parse_args(argv)
    rows, runs = (50_000, 1) if args.quick else (args.rows, args.runs)
    results = args.results or (None if args.quick else RESULTS)

    csv = orders_file(rows, args.data_dir)
    size_mib = csv.stat().st_size / 2**20
    print(f"publish benchmark: {rows:,} rows, {size_mib:,.0f} MiB CSV, {runs} run(s) each")
    shoal_runs: list[tuple[float, float]] = []
    peer_runs: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory(prefix="shoal-bench-", dir=args.data_dir) as tmp:
        scratch = Path(tmp)
        if not args.quick:
            shoal_once(csv, scratch)  # warm-up: page cache and imports, not counted
            peer_once(csv, scratch)
        for index in range(runs):
            shoal_runs.append(shoal_once(csv, scratch))
            peer_runs.append(peer_once(csv, scratch))
            print(
                f"  run {index + 1}: shoal {shoal_runs[-1][0]:.2f} s, "
                f"duckdb {peer_runs[-1][0]:.2f} s"
            )
    shoal_rate = stats([rows / s for s, _ in shoal_runs])
    peer_rate = stats([rows / s for s, _ in peer_runs])
    shoal_mem = stats([m for _, m in shoal_runs])
    peer_mem = stats([m for _, m in peer_runs])
    ratio = shoal_rate["median"] / peer_rate["median"]
    rate_ok = "PASS" if ratio >= 0.5 else "MISS"
    mem_ok = "PASS" if shoal_mem["max"] < 1536 else "MISS"
    header = "| system | rows/s median | min | max | peak memory median (MiB) | max |"
    table = "\n".join(
        [
            header,
            "|---|---|---|---|---|---|",
            _row("shoal publish", shoal_rate, shoal_mem),
            _row("duckdb COPY to parquet", peer_rate, peer_mem),
        ]
    )
    body = f"""## Publish (issue 2)

`bench/publish.py --rows {rows} --runs {runs}`: `shoal publish` (source read, contract
inferred and checked, Delta commit) of a {size_mib:,.0f} MiB orders CSV, beside DuckDB's
`COPY (SELECT * FROM read_csv(...)) TO '...parquet'` of the same file. Each run is a fresh
process; a warm-up run of each is not counted. Machine: {machine()}.

{table}
Ratio shoal/duckdb (median rows/s): **{ratio:.2f}x** (target >= 0.5x: {rate_ok}).
Shoal peak memory: **{shoal_mem["max"]:,.0f} MiB** at most (target < 1536 MiB: {mem_ok}).
"""
    print(body)
    if results is not None:
        write_section("publish", body, results)
        print(f"wrote {results}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
