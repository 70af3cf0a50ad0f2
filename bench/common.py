"""What every benchmark shares: timing a child process with its peak memory, statistics,
machine facts, and rewriting one benchmark's section of bench/RESULTS.md."""

from __future__ import annotations

import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
RESULTS = BENCH_DIR / "RESULTS.md"
DATA_DIR = BENCH_DIR / ".data"


@dataclass(frozen=True)
class Run:
    seconds: float
    peak_mib: float


def run_child(argv: list[str], env: dict[str, str] | None = None) -> Run:
    """Run a command to completion; give its wall time and its own peak RSS.

    wait4 reports the child's ru_maxrss alone (KiB on Linux), so each run's memory is
    measured apart from this process and from other runs.
    """
    started = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    out = proc.stdout.read().decode() if proc.stdout else ""
    err = proc.stderr.read().decode() if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({proc.returncode}): {err or out}")
    return Run(elapsed, usage.ru_maxrss / 1024)


def stats(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def machine() -> str:
    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    libs = ", ".join(
        f"{name} {version(name)}" for name in ("duckdb", "pyarrow", "deltalake", "shoal")
    )
    return (
        f"{os.cpu_count()} cores, {pages / 2**30:.0f} GiB memory, {platform.system()} "
        f"{platform.machine()}, Python {platform.python_version()}; {libs}; "
        f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}"
    )


def write_section(name: str, body: str, results: Path = RESULTS) -> None:
    """Replace this benchmark's section of RESULTS.md (between its markers)."""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    text = results.read_text(encoding="utf-8") if results.exists() else _HEADER
    if start in text:
        text = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    results.write_text(text, encoding="utf-8")


def python() -> str:
    return sys.executable


def max_rss_self_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


_HEADER = """# Benchmark results

Written by `make bench` (each benchmark rewrites only its own section). The machine is
shared and noisy: read the ratios to the peers measured in the same run, not the absolute
times. Figures come only from full runs, never from `--quick`.
"""
