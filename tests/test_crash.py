"""Crash safety: a child process publishes in a loop and is killed with SIGKILL at random
instants; after each kill, opening the node and `shoal verify` pass and every version whose
publish had returned is present."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from shoal.cli import app
from shoal.node import Node

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]

KILLS = int(os.environ.get("SHOAL_CRASH_KILLS", "100"))

CHILD = """
import sys
from pathlib import Path
from shoal.node import Node

node = Node.open(Path(sys.argv[1]))
print("ready", flush=True)
modes = ["append", "append", "overwrite", "upsert"]
i = 0
while True:
    mode = modes[i % len(modes)]
    result = node.publish("sales", sys.argv[2], mode=mode, key=["id"] if mode == "upsert" else None)
    print(result.version, flush=True)
    i += 1
"""


def test_sigkill_at_random_instants_never_breaks_history(tmp_path):
    home = tmp_path / "home"
    Node.init(home, "crashy")
    source = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"id": list(range(50)), "amount": [1.5] * 50}), source)
    rng = random.Random(20261124)
    returned: set[int] = set()
    runner = CliRunner()
    for kill in range(KILLS):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(home), str(source)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        first = child.stdout.readline()
        assert first.strip() == "ready", child.stderr.read() if child.stderr else first
        time.sleep(rng.uniform(0.0, 0.4))
        child.send_signal(signal.SIGKILL)
        out, _ = child.communicate(timeout=30)
        returned.update(int(line) for line in out.split() if line.isdigit())

        node = Node.open(home)  # completes or rolls back the interrupted publish
        summary = node.verify("sales") if node.products.exists("sales") else []
        versions = {v.version for v in node.history("sales")} if summary else set()
        assert returned <= versions, f"kill {kill}: lost versions {sorted(returned - versions)}"
        if kill % 20 == 0:
            result = runner.invoke(app, ["verify", "--home", str(home)])
            assert result.exit_code == 0, result.output
    assert returned, "the child never finished a publish; kills came too early"
