"""Real node processes on loopback for multi-process tests, built through the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from shoal.localmesh import LocalNode, wait_until

SHOAL = [sys.executable, "-m", "shoal"]

ServedNode = LocalNode


def shoal(*args: str, home: Path | None = None, check: bool = True, timeout: float = 120):
    """Run one `shoal` command in a child process; gives the CompletedProcess."""
    command = [*SHOAL, *args]
    if home is not None:
        command += ["--home", str(home)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(
            f"shoal {' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
        )
    return result


def build_mesh(root: Path, names: list[str], region: str = "eu-de") -> dict[str, LocalNode]:
    """A hub (the first name) and members that join with `shoal invite` / `shoal join`."""
    hub_name, *others = names
    hub = LocalNode(hub_name, root / hub_name)
    shoal("init", "--name", hub_name, "--region", region, home=hub.home)
    hub.start()
    nodes = {hub_name: hub}
    for name in others:
        invited = shoal("invite", name, "--region", region, home=hub.home)
        token = invited.stdout.strip().splitlines()[-1]
        member = LocalNode(name, root / name)
        shoal("join", hub.http, token, home=member.home)
        nodes[name] = member.start()
    return nodes


def stop_all(nodes: dict[str, LocalNode]) -> None:
    for node in nodes.values():
        node.stop()


__all__ = ["ServedNode", "build_mesh", "shoal", "stop_all", "wait_until"]
