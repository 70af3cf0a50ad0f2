"""`shoal demo --check` end to end, and the README's Python example against a real mesh."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shoal.localmesh import LocalMesh
from shoal.node import Node
from tests.mesh.processes import shoal

pytestmark = [pytest.mark.multiprocess, pytest.mark.timeout(300)]

README = Path(__file__).resolve().parents[2] / "README.md"


def test_demo_check_passes():
    done = subprocess.run(
        [sys.executable, "-m", "shoal", "demo", "--check", "--orders", "3000"],
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "all answers match" in done.stdout
    for node in ("hq", "berlin", "munich", "marketing"):
        assert node in done.stdout


def test_readme_python_example_runs(tmp_path, monkeypatch):
    block = next(
        b for b in re.findall(r"```python\n(.*?)```", README.read_text(), re.S) if "connect(" in b
    )
    with LocalMesh(tmp_path / "mesh") as mesh:
        mesh.start([("hq", "eu-de"), ("berlin", "eu-de")])
        orders = tmp_path / "orders.parquet"
        pq.write_table(pa.table({"order_id": [1, 2], "amount": [3.5, 4.0]}), orders)
        Node.open(mesh.root / "berlin").publish("orders", str(orders))
        mesh.wait_for_catalog({"berlin.orders"})
        monkeypatch.chdir(tmp_path)
        pq.write_table(pa.table({"sku": ["a"], "price": [1.0]}), tmp_path / "prices.parquet")
        shoal("user", "add", "ana", "--role", "admin", home=mesh.nodes["hq"].home)
        assert (tmp_path / "ana.shoal-profile").exists()
        namespace: dict = {}
        exec(compile(block, "README.md", "exec"), namespace)
        assert namespace["result"].rows() == [("berlin", 2)]
        namespace["mesh"].close()
        mesh.wait_for_catalog({"hq.prices"})
