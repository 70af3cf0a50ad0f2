"""Run every benchmark under bench/ (each also runs alone); `--quick` passes through."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHMARKS = (
    "publish.py",
    "log.py",
    "federated.py",
    "security.py",
    "replication.py",
    "compare.py",
)


def main() -> int:
    extra = sys.argv[1:]
    here = Path(__file__).resolve().parent
    failed = 0
    for name in BENCHMARKS:
        print(f"== {name}", flush=True)
        failed |= subprocess.call([sys.executable, str(here / name), *extra])
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
