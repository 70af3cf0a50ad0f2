"""The benchmarks run in --quick mode, so they never rot; figures come only from full runs."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
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


@pytest.mark.postgres
def test_postgres_peer_quick(tmp_path):
    """The postgres_fdw federation and the single PostgreSQL agree with DuckDB on every query,
    are timed, and every cluster is stopped and removed afterwards."""
    # Not under tmp_path: under root the clusters run as `postgres`, who cannot enter it.
    clusters = Path(tempfile.mkdtemp(prefix="shoal-peer-"))
    clusters.chmod(0o755)
    try:
        done = subprocess.run(
            [
                sys.executable,
                str(BENCH / "postgres_peer.py"),
                "--quick",
                "--data-dir",
                str(tmp_path / "data"),
                "--cluster-dir",
                str(clusters),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr + done.stdout
        for query in ("Q1", "Q2", "Q3", "Q4", "Q5", "Q6"):
            timed = rf"^  {query} .*: postgres_fdw [\d.]+ ms, single postgres [\d.]+ ms, duckdb "
            assert re.search(timed, done.stdout, re.MULTILINE), done.stdout
        assert "stopped 6 PostgreSQL clusters" in done.stdout
        assert list(clusters.iterdir()) == []
    finally:
        shutil.rmtree(clusters, ignore_errors=True)


@pytest.mark.postgres
@pytest.mark.multiprocess
def test_compare_benchmark_quick(tmp_path):
    """Shoal, DuckDB and postgres_fdw side by side: every section of the report is there,
    the plots are drawn, and the PostgreSQL clusters are gone afterwards."""
    done = subprocess.run(
        [
            sys.executable,
            str(BENCH / "compare.py"),
            "--quick",
            "--data-dir",
            str(tmp_path / "data"),
            "--results",
            str(tmp_path / "RESULTS.md"),
            "--plots",
            str(tmp_path / "plots"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr + done.stdout[-3000:]
    text = (tmp_path / "RESULTS.md").read_text()
    assert "<!-- bench:compare -->" in text
    for query in ("Q1", "Q2", "Q3", "Q4", "Q5", "Q6"):
        assert re.search(rf"^\| {query} .*\| [\d.]+x", text, re.MULTILINE), text
    assert "| shoal | 2 |" in text and "| postgres_fdw | 2 |" in text
    assert "Scale: nodes" in text and "Scale: rows" in text
    for plot in ("scale-nodes.png", "scale-rows.png"):
        assert (tmp_path / "plots" / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![scale-nodes](plots/scale-nodes.png)" in text
    assert done.stdout.count("stopped") >= 3  # every federation it started was stopped


def test_make_bench_reports_its_minutes_against_the_budget(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import run_all

    within = run_all.report({"publish.py": 1.5, "compare.py": 12.0}, [])
    assert "13.5 minutes, within the 20-minute budget" in within
    assert "| compare.py | 12.0 |" in within
    over = run_all.report({"publish.py": 2.0, "compare.py": 28.4}, ["compare.py"])
    assert "30.4 minutes, OVER the 20-minute budget" in over
    assert "| compare.py (FAILED) | 28.4 |" in over
    done = subprocess.run(
        [sys.executable, str(BENCH / "run_all.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "--quick" in done.stdout and "--results" in done.stdout
