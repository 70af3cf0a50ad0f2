"""Invites, the member list and the catalog on real node homes (no network)."""

from __future__ import annotations

import json

import pytest

from shoal.crypto import generate_key
from shoal.errors import ConflictError, NotFoundError, RefusedError, TokenError, UsageError
from shoal.mesh.catalog import CatalogEntry
from shoal.mesh.invites import Invites, parse_duration
from shoal.mesh.membership import Member
from shoal.mesh.tokens import issue_join_token, sign_certificate
from shoal.node import Node


@pytest.fixture
def hub(tmp_path) -> Node:
    node = Node.init(tmp_path / "hq", "hq", "eu-de")
    node.membership.found()
    return node


def _join(hub: Node, tmp_path, name: str) -> Node:
    token, _ = Invites(hub.home, hub.membership).issue(name, "eu-de", 3600)
    member = Node.init(tmp_path / name, name, "eu-de")
    admission = Invites(hub.home, hub.membership).redeem(token, member.home.key().public_bytes)
    member.membership.adopt(admission.hub, admission.hub_key, admission.members)
    return member


def test_found_makes_the_node_hub(hub):
    assert hub.membership.hub == "hq"
    me = hub.membership.member("hq")
    assert me.is_hub and me.public_key == hub.home.key().public_bytes
    hub.membership.found()  # a second call changes nothing
    assert list(hub.membership.members()) == ["hq"]


def test_invite_and_redeem(hub, tmp_path):
    berlin = _join(hub, tmp_path, "berlin")
    assert set(hub.membership.members()) == {"hq", "berlin"}
    assert set(berlin.membership.members()) == {"hq", "berlin"}
    assert berlin.membership.member("berlin").region == "eu-de"
    assert berlin.membership.hub == "hq"


def test_a_token_works_once(hub, tmp_path):
    invites = Invites(hub.home, hub.membership)
    token, _ = invites.issue("berlin", "eu-de", 3600)
    invites.redeem(token, generate_key().public_bytes)
    with pytest.raises(TokenError, match="already been used"):
        invites.redeem(token, generate_key().public_bytes)


def test_expired_and_foreign_tokens(hub):
    invites = Invites(hub.home, hub.membership)
    expired, _ = issue_join_token(hub.home.key(), "hq", "berlin", "eu-de", -3600)
    with pytest.raises(TokenError, match="expired"):
        invites.redeem(expired, generate_key().public_bytes)
    # Signed by the hub's key but never recorded (e.g. made by a stolen copy of old code).
    unrecorded, _ = issue_join_token(hub.home.key(), "hq", "berlin", "eu-de", 3600)
    with pytest.raises(TokenError, match="not issued"):
        invites.redeem(unrecorded, generate_key().public_bytes)
    foreign, _ = issue_join_token(generate_key(), "hq", "berlin", "eu-de", 3600)
    with pytest.raises(TokenError, match="forged"):
        invites.redeem(foreign, generate_key().public_bytes)


def test_invite_refusals(hub, tmp_path):
    invites = Invites(hub.home, hub.membership)
    with pytest.raises(UsageError):
        invites.issue("Bad Name", "eu-de", 60)
    with pytest.raises(UsageError):
        invites.issue("berlin", "eu de;drop", 60)
    with pytest.raises(ConflictError):
        invites.issue("hq", "eu-de", 60)
    berlin = _join(hub, tmp_path, "berlin")
    with pytest.raises(RefusedError, match="only the hub"):
        Invites(berlin.home, berlin.membership).issue("munich", "eu-de", 60)
    with pytest.raises(UsageError):
        invites.redeem("x", b"short")


@pytest.mark.parametrize(
    "text,seconds", [("90s", 90), ("15m", 900), ("24h", 86400), ("7d", 604800)]
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0s", "24", "1w", "-1h", "31d", "1.5h", "9999999d"])
def test_bad_durations(text):
    with pytest.raises(UsageError):
        parse_duration(text)


def test_relayed_member_records_are_checked(hub, tmp_path):
    berlin = _join(hub, tmp_path, "berlin")
    rogue_key = generate_key()
    # A certificate signed by someone other than the hub is dropped.
    fake = sign_certificate(rogue_key, "hq", "mallory", "eu-de", rogue_key.public_bytes)
    assert berlin.membership.merge([Member(fake, None).record()]) == []
    assert "mallory" not in berlin.membership.members()
    # Junk records are dropped too; too many records are refused.
    assert berlin.membership.merge([{"certificate": "junk"}, 42, None]) == []
    with pytest.raises(TokenError):
        berlin.membership.merge([{}] * 1001)
    # A newer announcement replaces an older one, an older one never wins.
    hub.membership.announce("http://hq:1", "grpc://hq:2")
    assert berlin.membership.merge(hub.membership.records()) == ["hq"]
    old = hub.membership.member("hq").record()
    hub.membership.announce("http://hq:3", "grpc://hq:4")
    berlin.membership.merge(hub.membership.records())
    assert berlin.membership.merge([old]) == []
    assert berlin.membership.member("hq").http == "http://hq:3"


def test_catalog_keeps_only_entries_signed_by_their_owner(hub, tmp_path, write_parquet):
    berlin = _join(hub, tmp_path, "berlin")
    berlin.publish("orders", str(write_parquet({"id": [1, 2, 3]})))
    changed = berlin.refresh_catalog()
    assert [e.key for e in changed] == ["berlin.orders"]
    assert berlin.refresh_catalog() == []  # nothing new: nothing changes
    entry = changed[0]
    assert hub.catalog.merge([entry.model_dump()]) != []
    assert hub.catalog.get("berlin", "orders").version == 1
    # Same entry again: not news.
    assert hub.catalog.merge([entry.model_dump()]) == []
    # A checkpoint for another product, or re-signed by another key, is dropped.
    tampered = entry.model_copy(update={"product": "sales"})
    assert hub.catalog.merge([tampered.model_dump()]) == []
    fake_note = entry.checkpoint.replace("berlin/orders", "berlin/orderz")
    assert (
        hub.catalog.merge([entry.model_copy(update={"checkpoint": fake_note}).model_dump()]) == []
    )
    # Nobody but the owner speaks for the owner's products, and junk is dropped.
    assert berlin.catalog.merge([entry.model_dump()]) == []
    assert hub.catalog.merge([{"owner": "x"}, "junk", {"owner": "BAD", "product": 1}]) == []
    # An older version never replaces a newer one.
    berlin.publish("orders", str(write_parquet({"id": [4]})))
    newer = berlin.refresh_catalog()[0]
    hub.catalog.merge([newer.model_dump()])
    assert hub.catalog.merge([entry.model_dump()]) == []
    assert hub.catalog.get("berlin", "orders").version == 2
    with pytest.raises(NotFoundError):
        hub.catalog.get("berlin", "nothing")


def test_changes_since(hub, tmp_path, write_parquet):
    berlin = _join(hub, tmp_path, "berlin")
    berlin.publish("a", str(write_parquet({"x": [1]})))
    berlin.publish("b", str(write_parquet({"x": [1]})))
    berlin.refresh_catalog()
    epoch, counter, entries = berlin.catalog.changes_since(0, "")
    assert [e.key for e in entries] == ["berlin.a", "berlin.b"]
    _, _, none = berlin.catalog.changes_since(counter, epoch)
    assert none == []
    # Another epoch (the catalog was reset, or it is another node's): everything again.
    _, _, everything = berlin.catalog.changes_since(counter, "other")
    assert len(everything) == 2
    assert CatalogEntry(**json.loads(entries[0].model_dump_json())) == entries[0]


def test_not_in_a_mesh(tmp_path):
    lone = Node.init(tmp_path / "lone", "lone")
    assert not lone.membership.joined()
    with pytest.raises(NotFoundError, match="not in a mesh"):
        lone.membership.members()
