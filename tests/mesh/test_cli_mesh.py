"""The mesh commands on homes (no server): describe and list from the catalog, nodes, invite,
explain, and their refusals."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from shoal.cli import app
from shoal.mesh.invites import Invites
from shoal.node import Node

runner = CliRunner()


def shoal(*args: str):
    return runner.invoke(app, list(args))


@pytest.fixture
def two_nodes(tmp_path, write_parquet):
    hub = Node.init(tmp_path / "hq", "hq", "eu-de")
    hub.membership.found()
    token, _ = Invites(hub.home, hub.membership).issue("berlin", "eu-de", 600)
    berlin = Node.init(tmp_path / "berlin", "berlin", "eu-de")
    admission = Invites(hub.home, hub.membership).redeem(token, berlin.home.key().public_bytes)
    berlin.membership.adopt(admission.hub, admission.hub_key, admission.members)
    berlin.publish("orders", str(write_parquet({"order_id": [1, 2], "amount": [2.5, 3.0]})))
    hub.catalog.merge([e.model_dump() for e in berlin.refresh_catalog()])
    return hub, berlin


def test_describe_and_list_a_peers_product(two_nodes):
    hub, _ = two_nodes
    home = str(hub.home.root)
    described = shoal("describe", "berlin.orders", "--home", home)
    assert described.exit_code == 0, described.output
    assert "berlin.orders" in described.output and "amount" in described.output
    assert "berlin/orders" in described.output  # the signed checkpoint
    listed = shoal("products", "--mesh", "--json", "--home", home)
    assert [p["name"] for p in json.loads(listed.output)] == ["berlin.orders"]
    missing = shoal("describe", "berlin.ordrs", "--home", home)
    assert missing.exit_code == 4 and "berlin.orders" in missing.output


def test_nodes_without_a_running_server(two_nodes):
    hub, _ = two_nodes
    shown = shoal("nodes", "--json", "--home", str(hub.home.root))
    assert shown.exit_code == 0, shown.output
    rows = {r["name"]: r for r in json.loads(shown.output)}
    assert rows["hq"]["state"] == "self" and rows["hq"]["hub"]
    assert rows["berlin"]["state"] == "unknown" and rows["berlin"]["products"] == 1


def test_explain_from_a_home(two_nodes):
    hub, _ = two_nodes
    shown = shoal(
        "explain", "SELECT order_id FROM orders WHERE amount > 2", "--home", str(hub.home.root)
    )
    assert shown.exit_code == 0, shown.output
    assert "node berlin:" in shown.output and '"amount" > 2' in shown.output


def test_invite_prints_the_token_last_and_refuses_non_hubs(two_nodes):
    hub, berlin = two_nodes
    made = shoal(
        "invite", "munich", "--region", "eu-de", "--expires", "1h", "--home", str(hub.home.root)
    )
    assert made.exit_code == 0, made.output
    assert made.output.strip().splitlines()[-1].count(".") == 2  # a JWT
    refused = shoal("invite", "munich", "--home", str(berlin.home.root))
    assert refused.exit_code == 6 and "only the hub" in refused.output
    bad = shoal("invite", "Munich!", "--home", str(hub.home.root))
    assert bad.exit_code == 2


@pytest.mark.parametrize(
    "args",
    [
        ("serve", "--http", "nonsense"),
        ("serve", "--http", "127.0.0.1:99999"),
        ("serve", "--advertise", "not a url"),
        ("sql", "SELECT 1", "--at", "ftp://x"),
        ("join", "ftp://hub", "a.b.c"),
        ("join", "http://127.0.0.1:9", "not-a-token"),
    ],
)
def test_bad_mesh_arguments_exit_2_or_6_and_write_nothing(tmp_path, args):
    Node.init(tmp_path / "home", "solo")
    before = sorted(p.name for p in (tmp_path / "home").rglob("*"))
    result = shoal(
        *args, "--home", str(tmp_path / "home" if args[0] != "join" else tmp_path / "new")
    )
    assert result.exit_code in (2, 6), result.output
    assert sorted(p.name for p in (tmp_path / "home").rglob("*")) == before
    assert not (tmp_path / "new").exists()


def test_join_an_unreachable_hub_leaves_nothing(tmp_path):
    hub = Node.init(tmp_path / "hq", "hq")
    hub.membership.found()
    token, _ = Invites(hub.home, hub.membership).issue("berlin", "local", 600)
    result = shoal("join", "http://127.0.0.1:9", token, "--home", str(tmp_path / "berlin"))
    assert result.exit_code == 8, result.output
    assert not (tmp_path / "berlin").exists()
