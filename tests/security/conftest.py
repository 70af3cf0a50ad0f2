"""A node to attack in process, a served mesh to attack over the wire, and their bait."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.flight as flight
import pyarrow.parquet as pq
import pytest

from shoal.config import Home, open_home
from shoal.mesh.peers import FRAGMENT_PATH, signed_headers
from shoal.node import Node
from tests.mesh.processes import LocalNode, build_mesh, stop_all
from tests.mesh.processes import shoal as run_shoal

from .escapes import SECRET_TEXT

ORDERS = pa.table({"id": [1, 2, 3], "amount": [1.5, 2.5, 3.5]})


@dataclass
class Bait:
    """A file whose text must never come back, and a folder nothing may be written to."""

    secret: Path
    out: Path

    def target(self) -> str:
        return str(self.out / "escaped")

    def assert_untouched(self) -> None:
        assert list(self.out.iterdir()) == [], "an escape wrote a file"
        assert self.secret.read_text() == SECRET_TEXT + "\n"


def make_bait(root: Path) -> Bait:
    root.mkdir(parents=True, exist_ok=True)
    secret = root / "secret.txt"
    secret.write_text(SECRET_TEXT + "\n")
    out = root / "out"
    out.mkdir()
    return Bait(secret, out)


@dataclass
class Lab:
    node: Node
    bait: Bait


@pytest.fixture(scope="package")
def lab(tmp_path_factory) -> Lab:
    """A hub with one product, `hq.orders`, in a mesh of its own (in process)."""
    root = tmp_path_factory.mktemp("lab")
    node = Node.init(root / "hq", "hq", "eu-de")
    node.membership.found()
    pq.write_table(ORDERS, root / "orders.parquet")
    node.publish("orders", str(root / "orders.parquet"))
    return Lab(node, make_bait(root / "bait"))


@dataclass
class Served:
    """Two served nodes: `berlin` holds `orders`; the test speaks as member `hq`."""

    nodes: dict[str, LocalNode]
    hq: Home
    bait: Bait

    @property
    def berlin(self) -> LocalNode:
        return self.nodes["berlin"]

    def ticket(self, sql: str, **fragment: Any) -> bytes:
        body = {"owner": "berlin", "product": "orders", "sql": sql, "version": None}
        return json.dumps({"fragment": {**body, **fragment}}).encode()

    def signed(self, ticket: bytes, **overrides: Any) -> dict[str, str]:
        """Headers a real coordinator (hq) would send with `ticket`."""
        call = {"audience": "berlin", "method": "DOGET", "path": FRAGMENT_PATH, "body": ticket}
        call.update(overrides)
        return signed_headers(self.hq, **call)

    def do_get(self, ticket: bytes, headers: dict[str, str] | None) -> pa.Table:
        options = flight.FlightCallOptions(
            timeout=30,
            headers=[(k.encode(), v.encode()) for k, v in (headers or {}).items()],
        )
        client = self.berlin.flight_client(as_home=self.hq.root)
        try:
            return client.do_get(flight.Ticket(ticket), options).read_all()
        finally:
            client.close()

    def refusal(self, ticket: bytes, headers: dict[str, str] | None) -> dict[str, Any]:
        """The ShoalError berlin answers `ticket` with, as its JSON."""
        with pytest.raises(flight.FlightError) as caught:
            self.do_get(ticket, headers)
        extra = getattr(caught.value, "extra_info", b"") or b""
        assert extra, f"no Shoal error attached: {caught.value}"
        answer: dict[str, Any] = json.loads(extra)
        return answer


@pytest.fixture(scope="package")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("served")
    nodes = build_mesh(root, ["hq", "berlin"])
    try:
        pq.write_table(ORDERS, root / "orders.parquet")
        run_shoal("publish", "orders", str(root / "orders.parquet"), home=nodes["berlin"].home)
        yield Served(nodes, open_home(nodes["hq"].home), make_bait(root / "bait"))
    finally:
        stop_all(nodes)
