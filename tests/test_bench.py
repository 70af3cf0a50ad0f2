"""The benchmarks run in --quick mode, so they never rot; figures come only from full runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def run_quick(script: str, tmp_path: Path) -> str:
    """Run a benchmark in --quick mode into a scratch RESULTS.md and give that file's text."""
    results = tmp_path / "RESULTS.md"
    done = subprocess.run(
        [
            sys.executable,
            str(BENCH / script),
            "--quick",
            "--data-dir",
            str(tmp_path / "data"),
            "--results",
            str(results),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return results.read_text()


def test_publish_benchmark_quick(tmp_path):
    text = run_quick("publish.py", tmp_path)
    assert "<!-- bench:publish -->" in text and "<!-- /bench:publish -->" in text
    assert "| shoal publish |" in text and "| duckdb COPY to parquet |" in text
    assert "Ratio shoal/duckdb" in text


def test_benchmarks_list_their_knobs():
    done = subprocess.run(
        [sys.executable, str(BENCH / "publish.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    for knob in ("--rows", "--runs", "--quick", "--results"):
        assert knob in done.stdout


def test_log_benchmark_quick(tmp_path):
    text = run_quick("log.py", tmp_path)
    assert "<!-- bench:log -->" in text
    assert "| shoal verify |" in text and "| sha256sum |" in text
    assert "ms added" in text


@pytest.mark.multiprocess
def test_federated_benchmark_quick(tmp_path):
    text = run_quick("federated.py", tmp_path)
    assert "<!-- bench:federated -->" in text
    for query in ("Q1 revenue by store", "Q4 one order by id", "Q5 revenue by category"):
        assert f"| {query}" in text
    assert "| Q1 repeated (exact cache) |" in text and "coordinator hq" in text
    assert "| query | planning ms |" in text


@pytest.mark.multiprocess
def test_security_benchmark_quick(tmp_path):
    text = run_quick("security.py", tmp_path)
    assert "<!-- bench:security -->" in text
    assert "| Q4 one order by id |" in text and "on/off" in text


@pytest.mark.multiprocess
def test_replication_benchmark_quick(tmp_path):
    text = run_quick("replication.py", tmp_path)
    assert "<!-- bench:replication -->" in text and "<!-- /bench:replication -->" in text
    assert "| shoal: a new node's copy |" in text and "| cp -r |" in text
    assert "Ratio shoal/cp" in text
    assert "| both replicas |" in text and "| hamburg |" in text and "| munich |" in text
    assert "| owner up |" in text and "| first query after SIGKILL |" in text
    assert "Added (first query after the kill" in text and "Peak memory" in text
    done = subprocess.run(
        [sys.executable, str(BENCH / "replication.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    knobs = ("--quick", "--runs", "--results", "--data-dir", "--size-mb", "--publishes", "--rows")
    assert all(knob in done.stdout for knob in knobs)
