"""Run every benchmark under bench/ (each also runs alone) and record how long each took.

`--quick` and `--results FILE` pass through to every benchmark. A full run (no `--quick`)
writes the minutes of each benchmark and of the whole run into RESULTS.md's `make bench`
section, beside the 20-minute budget, so the cost of the figures is a figure too.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, machine, write_section

BENCHMARKS = (
    "publish.py",
    "log.py",
    "federated.py",
    "security.py",
    "replication.py",
    "compare.py",
)
BUDGET_MINUTES = 20.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="every benchmark's --quick mode")
    parser.add_argument("--results", type=Path, default=None, help="RESULTS.md to update")
    args = parser.parse_args(argv)
    extra = [
        *(["--quick"] if args.quick else []),
        *(["--results", str(args.results)] if args.results else []),
    ]
    here = Path(__file__).resolve().parent
    minutes: dict[str, float] = {}
    failed: list[str] = []
    for name in BENCHMARKS:
        print(f"== {name}", flush=True)
        started = time.perf_counter()
        if subprocess.call([sys.executable, str(here / name), *extra]) != 0:
            failed.append(name)
        minutes[name] = (time.perf_counter() - started) / 60
        print(f"== {name}: {minutes[name]:.1f} minutes", flush=True)
    body = report(minutes, failed)
    print(body)
    results = args.results or (None if args.quick else RESULTS)
    if results is not None:
        write_section("make-bench", body, results)
    return 1 if failed else 0


def report(minutes: dict[str, float], failed: list[str]) -> str:
    total = sum(minutes.values())
    verdict = "within" if total <= BUDGET_MINUTES else "OVER"
    lines = [
        "## What `make bench` costs",
        "",
        f"The last whole `make bench` on {machine()}: {total:.1f} minutes, {verdict} the "
        f"{BUDGET_MINUTES:.0f}-minute budget.",
        "",
        "| benchmark | minutes |",
        "|---|---|",
        *(
            f"| {name}{' (FAILED)' if name in failed else ''} | {value:.1f} |"
            for name, value in minutes.items()
        ),
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
