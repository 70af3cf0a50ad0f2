"""Fixtures shared by every test module."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shoal.node import Node


@pytest.fixture
def node(tmp_path: Path) -> Node:
    """A fresh node named berlin in a temporary home."""
    return Node.init(tmp_path / "home", "berlin", "eu-de")


@pytest.fixture
def write_parquet(tmp_path: Path):
    """Write an Arrow table (or a dict of columns) to a Parquet file and give its path."""
    counter = iter(range(1_000_000))

    def write(data, name: str | None = None) -> Path:
        table = data if isinstance(data, pa.Table) else pa.table(data)
        path = tmp_path / (name or f"data-{next(counter)}.parquet")
        pq.write_table(table, path)
        return path

    return write


def tree_snapshot(root: Path) -> dict[str, bytes]:
    """Every file under `root` with its bytes, to prove that nothing changed."""
    # Judged by the path inside `root`: the test's own folder lies under /tmp.
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and not {"locks", "tmp"} & set(path.relative_to(root).parts)
    }
