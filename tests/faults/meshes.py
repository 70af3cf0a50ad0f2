"""Meshes of real node processes for fault tests: regions per node, fast pings, helpers to
publish, query and look at copies."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from shoal.localmesh import LocalNode, wait_until
from tests.mesh.processes import shoal

FAST = {"ping_interval": 0.2, "query_timeout": 5.0, "replica_grace": 3600.0}


def set_settings(home: Path, values: dict[str, Any]) -> None:
    path = home / "settings.yaml"
    data = yaml.safe_load(path.read_text())
    data.update(values)
    path.write_text(yaml.safe_dump(data))


def build(root: Path, regions: dict[str, str], **settings: Any) -> dict[str, LocalNode]:
    """A hub (the first name) and members in the given regions, all serving."""
    (hub_name, hub_region), *others = regions.items()
    values = FAST | settings
    hub = LocalNode(hub_name, root / hub_name)
    shoal("init", "--name", hub_name, "--region", hub_region, home=hub.home)
    set_settings(hub.home, values)
    nodes = {hub_name: hub.start()}
    for name, region in others:
        invited = shoal("invite", name, "--region", region, home=hub.home)
        token = invited.stdout.strip().splitlines()[-1]
        member = LocalNode(name, root / name)
        shoal("join", hub.http, token, home=member.home)
        set_settings(member.home, values)
        nodes[name] = member.start()
    return nodes


def stop(nodes: dict[str, LocalNode]) -> None:
    for node in nodes.values():
        node.kill()


def write_orders(path: Path, start: int, rows: int) -> Path:
    pq.write_table(
        pa.table(
            {
                "order_id": pa.array(range(start, start + rows), pa.int64()),
                "amount": pa.array([float(i % 97) for i in range(start, start + rows)]),
            }
        ),
        path,
    )
    return path


def placement(node: LocalNode, product: str) -> dict[str, Any]:
    found = node.get(f"/api/v1/products/{product}")
    assert len(found) == 1, found
    return dict(found[0])


def current_holders(node: LocalNode, product: str, version: int) -> set[str]:
    """Nodes that `node` sees holding `product` at `version`."""
    try:
        seen = placement(node, product)
    except httpx.HTTPError:
        return set()
    return {h["node"] for h in seen["holders"] if h["version"] == version}


def query(node: LocalNode, sql: str) -> pa.Table:
    """Run SQL at `node` over HTTP; the Arrow answer with its metadata."""
    response = node.call("POST", "/api/v1/query", json={"sql": sql}, timeout=60)
    if response.status_code >= 400:
        raise AssertionError(f"query at {node.name} failed: {response.text}")
    return pa.ipc.open_stream(pa.py_buffer(response.content)).read_all()


def read_info(table: pa.Table) -> dict[str, Any]:
    return dict(json.loads(table.schema.metadata[b"shoal.read"]))


def events(home: Path, kind: str) -> list[dict[str, Any]]:
    from shoal.config import open_home
    from shoal.events import read_events

    return read_events(open_home(home), kind)


def wait_for_copies(
    nodes: dict[str, LocalNode], observer: str, product: str, version: int, holders: set[str]
) -> None:
    wait_until(
        lambda: holders <= current_holders(nodes[observer], product, version),
        timeout=30,
        what=f"{product} v{version} held by {sorted(holders)} as seen from {observer}",
    )


__all__ = [
    "build",
    "current_holders",
    "events",
    "placement",
    "query",
    "read_info",
    "set_settings",
    "stop",
    "wait_for_copies",
    "wait_until",
    "write_orders",
]
