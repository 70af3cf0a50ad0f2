"""Who is in the mesh: the hub's identity and every member's certificate and endpoints.

Stored in `<home>/mesh/mesh.json`. Each member is two signed tokens: a certificate from the
hub (name, region, public key) and the member's own announcement of its endpoints. Records
from peers are checked before they are kept, so a member list can be relayed by any node and
still be trusted; a record that does not verify is dropped and logged.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from shoal import audit
from shoal.config import Home
from shoal.crypto import public_key_from_bytes
from shoal.errors import NotFoundError, RefusedError, TokenError, UsageError
from shoal.mesh.files import JsonFile, mesh_lock
from shoal.mesh.tokens import (
    Announcement,
    Certificate,
    read_announcement,
    read_certificate,
    sign_announcement,
    sign_certificate,
)
from shoal.policy import MeshRules

__all__ = ["Member", "Membership"]

log = logging.getLogger("shoal.mesh")

MAX_MEMBERS = 1000


@dataclass(frozen=True)
class Member:
    certificate: Certificate
    announcement: Announcement | None

    @property
    def name(self) -> str:
        return self.certificate.name

    @property
    def region(self) -> str:
        return self.certificate.region

    @property
    def is_hub(self) -> bool:
        return self.certificate.is_hub

    @property
    def public_key(self) -> bytes:
        return self.certificate.public_key

    @property
    def http(self) -> str:
        return self.announcement.http if self.announcement else ""

    @property
    def flight(self) -> str:
        return self.announcement.flight if self.announcement else ""

    @property
    def holds(self) -> Mapping[str, tuple[int, int, int]]:
        """The verified replicas it holds:
        `owner.product` -> (tree size, Delta version, product version)."""
        return self.announcement.holds if self.announcement else {}

    def record(self) -> dict[str, Any]:
        """The member as relayed between nodes: just the two signed tokens."""
        return {
            "certificate": self.certificate.token,
            "announcement": self.announcement.token if self.announcement else None,
        }

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "region": self.region,
            "hub": self.is_hub,
            "http": self.http,
            "flight": self.flight,
            "key_id": self.certificate.key_id,
        }


class Membership:
    """The member list of the mesh this home belongs to (if it belongs to one yet)."""

    def __init__(self, home: Home) -> None:
        self.home = home
        self._file = JsonFile(home.root / "mesh" / "mesh.json")
        self._cache_key: int | None = None
        self._members: dict[str, Member] = {}
        self._revoked_nodes: frozenset[str] = frozenset()
        self._rules, self._rules_key = MeshRules(), "{}"

    # -- reading ------------------------------------------------------------------------
    def joined(self) -> bool:
        return self._file.exists()

    def _state(self) -> dict[str, Any]:
        state = self._file.read()
        if state is None:
            raise NotFoundError(
                f"node '{self.home.settings.name}' is not in a mesh yet",
                hint="run `shoal serve` to start a new mesh with this node as hub, "
                "or `shoal join HUB_URL TOKEN` on a new home",
            )
        return dict(state)

    @property
    def hub(self) -> str:
        return str(self._state()["hub"])

    @property
    def hub_public(self) -> Ed25519PublicKey:
        return public_key_from_bytes(base64.b64decode(self._state()["hub_key"]))

    def members(self) -> dict[str, Member]:
        """Every verified member by name (this node included), less the nodes the hub
        revoked: their calls, catalog entries and copies count for nothing."""
        state = self._state()
        if self._cache_key != self._file.generation:
            hub_key = base64.b64decode(state["hub_key"])
            members = {}
            for record in state.get("members", []):
                member = _verified(record, hub_key)
                if member is not None:
                    members[member.name] = member
            hub = members.get(str(state["hub"]))
            revoked = hub.announcement.revoked_nodes if hub and hub.announcement else frozenset()
            me = self.home.settings.name
            self._members = {n: m for n, m in members.items() if n not in revoked or n == me}
            self._revoked_nodes = frozenset(revoked)
            self._cache_key = self._file.generation
        return dict(self._members)

    def revoked_nodes(self) -> frozenset[str]:
        """Names of the nodes the hub revoked (from its signed announcement)."""
        self.members()
        return self._revoked_nodes

    def rules(self) -> MeshRules:
        """The mesh-wide policy rules the hub signed into its announcement (none: no rules).
        Rules that do not parse count as the strictest there are: nobody reads."""
        hub = self.members().get(self.hub)
        raw = hub.announcement.rules if hub is not None and hub.announcement else {}
        key = json.dumps(raw, sort_keys=True)
        if key != self._rules_key:
            try:
                self._rules = MeshRules.model_validate(raw)
            except ValueError as exc:
                log.error("the hub's mesh rules do not parse (%s): no role reads", exc)
                self._rules = MeshRules(readers=[])
            self._rules_key = key
        return self._rules

    def set_rules(self, rules: MeshRules) -> None:
        """On the hub: sign mesh-wide rules into its announcement; every node applies them."""
        me = self.home.settings.name
        if self.hub != me:
            raise RefusedError(
                f"only the hub ('{self.hub}') sets the mesh's rules",
                hint="run this on the hub's home",
            )
        self.announce(rules=rules.model_dump(exclude_defaults=True))
        audit.record(
            self.home, "rules", f"local:{me}", rules=rules.model_dump(exclude_defaults=True)
        )

    def is_revoked(self) -> bool:
        """Whether the hub revoked this node."""
        return self.home.settings.name in self.revoked_nodes()

    def member(self, name: str) -> Member:
        try:
            return self.members()[name]
        except KeyError:
            raise NotFoundError(f"no node '{name}' in the mesh") from None

    def peers(self) -> list[Member]:
        """Every member but this node."""
        me = self.home.settings.name
        return [m for name, m in sorted(self.members().items()) if name != me]

    def revoked_users(self) -> frozenset[str]:
        """Ids of user tokens the hub revoked (from its signed announcement)."""
        hub = self.members().get(self.hub)
        if hub is None or hub.announcement is None:
            return frozenset()
        return hub.announcement.revoked

    def mask_secret(self) -> str:
        """The secret masks hash with, the same on every node of the mesh."""
        secret = self._state().get("mask_secret")
        if isinstance(secret, str) and secret:
            return secret
        # A mesh founded before masks: a secret of the hub's key, known to every member
        # only once the hub hands it out; until then, a per-node one.
        return hashlib.sha256(self.home.key().sign(b"shoal mask secret")).hexdigest()

    def records(self) -> list[dict[str, Any]]:
        return [m.record() for _, m in sorted(self.members().items())]

    # -- changing -----------------------------------------------------------------------
    def found(self) -> None:
        """Start a new mesh with this node as its hub (does nothing if already in one)."""
        with mesh_lock(self.home.root):
            if self._file.exists():
                return
            key = self.home.key()
            name = self.home.settings.name
            certificate = sign_certificate(
                key, name, name, self.home.settings.region, key.public_bytes
            )
            self._file.write(
                {
                    "hub": name,
                    "hub_key": base64.b64encode(key.public_bytes).decode(),
                    "members": [Member(certificate, None).record()],
                    "mask_secret": secrets.token_hex(32),
                }
            )
        # Imported here: the authority needs settings only the hub uses, and importing
        # cryptography's x509 costs every CLI command that never founds a mesh.
        from shoal.mesh.authority import found_authority

        found_authority(self.home)
        log.info("node %s founded a new mesh as its hub", name)

    def adopt(
        self, hub: str, hub_key: bytes, records: list[dict[str, Any]], mask_secret: str = ""
    ) -> None:
        """Record the mesh this node just joined (its hub, the first member list and the
        secret masks hash with)."""
        state: dict[str, Any] = {
            "hub": hub,
            "hub_key": base64.b64encode(hub_key).decode(),
            "members": [],
        }
        if mask_secret:
            state["mask_secret"] = mask_secret
        with mesh_lock(self.home.root):
            self._file.write(state)
        self.merge(records)
        if self.home.settings.name not in self.members():
            raise TokenError("the hub's answer does not list this node as a member")

    def admit(self, certificate: Certificate) -> None:
        """Add a newly certified member (on the hub)."""
        self.merge([Member(certificate, None).record()])

    def announce(
        self,
        http: str | None = None,
        flight: str | None = None,
        holds: Mapping[str, tuple[int, int, int]] | None = None,
        revoked: frozenset[str] | None = None,
        revoked_nodes: frozenset[str] | None = None,
        rules: Mapping[str, Any] | None = None,
    ) -> Member:
        """Sign and record this node's own endpoints and the replicas it holds (what is
        not given stays as announced before); gives the updated member."""
        me = self.member(self.home.settings.name)
        before = me.announcement
        announcement = sign_announcement(
            self.home.key(),
            me.name,
            me.http if http is None else http,
            me.flight if flight is None else flight,
            me.holds if holds is None else holds,
            (before.revoked if before else frozenset()) if revoked is None else revoked,
            (before.revoked_nodes if before else frozenset())
            if revoked_nodes is None
            else revoked_nodes,
            (before.rules if before else {}) if rules is None else rules,
        )
        updated = Member(me.certificate, announcement)
        self.merge([updated.record()])
        return updated

    def revoke_node(self, name: str) -> None:
        """On the hub: put node `name` out of the mesh, at every node. The revocation is part
        of the hub's signed announcement, relayed with the member list, so every node drops
        the member within a few pings: its calls, certificate renewals, catalog entries and
        copies count for nothing from then on. It cannot join again under that name."""
        me = self.home.settings.name
        if self.hub != me:
            raise RefusedError(
                f"only the hub ('{self.hub}') revokes nodes", hint="run this on the hub's home"
            )
        if name == me:
            raise UsageError("the hub cannot revoke itself")
        if name not in self.members() and name not in self.revoked_nodes():
            raise NotFoundError(f"no node '{name}' in the mesh")
        hub = self.member(me)
        already = hub.announcement.revoked_nodes if hub.announcement else frozenset()
        self.announce(revoked_nodes=already | {name})
        audit.record(self.home, "revocation", f"local:{me}", node=name)

    def merge(self, records: list[dict[str, Any]]) -> list[str]:
        """Keep every record that verifies and is news; gives the names that changed."""
        if not isinstance(records, list) or len(records) > MAX_MEMBERS:
            raise TokenError("a member list must be a list of at most 1000 records")
        changed: list[str] = []
        with mesh_lock(self.home.root):
            state = self._state()
            hub_key = base64.b64decode(state["hub_key"])
            current = {}
            for record in state.get("members", []):
                member = _verified(record, hub_key)
                if member is not None:
                    current[member.name] = member
            for record in records:
                member = _verified(record, hub_key)
                if member is None or not _is_news(member, current.get(member.name)):
                    continue
                current[member.name] = member
                changed.append(member.name)
            if changed:
                state["members"] = [m.record() for _, m in sorted(current.items())]
                self._file.write(state)
        return changed


def _is_news(new: Member, old: Member | None) -> bool:
    """A newer certificate or a newer announcement replaces what we hold."""
    if old is None:
        return True
    if new.certificate.key_id != old.certificate.key_id:
        return True
    new_at = new.announcement.at if new.announcement else 0.0
    old_at = old.announcement.at if old.announcement else 0.0
    return new_at > old_at


def _verified(record: object, hub_key: bytes) -> Member | None:
    """The member a relayed record describes, or None (logged) if it does not verify."""
    if not isinstance(record, dict):
        return None
    certificate, announcement = record.get("certificate", ""), record.get("announcement") or ""
    if not isinstance(certificate, str) or not isinstance(announcement, str):
        log.warning("dropped a member record whose tokens are not text")
        return None
    return _verified_tokens(certificate, announcement, hub_key)


@functools.lru_cache(maxsize=4096)
def _verified_tokens(
    certificate_token: str, announcement_token: str, hub_key: bytes
) -> Member | None:
    """Verify one member record's certificate and announcement (two Ed25519 checks).

    Every node pulls every member's record from every peer each ping interval, and checking
    them all again was most of an idle node's CPU (16 peers: over 500 checks a second). The
    tokens carry no expiry, so a record's answer never changes: each distinct one is checked
    once. A bad record is logged once, too.
    """
    try:
        certificate = read_certificate(certificate_token, public_key_from_bytes(hub_key))
        announcement = None
        if announcement_token:
            announcement = read_announcement(
                announcement_token, public_key_from_bytes(certificate.public_key)
            )
            if announcement.name != certificate.name:
                raise TokenError("the announcement is for another node")
    except TokenError as exc:
        log.warning("dropped a member record that does not verify: %s", exc)
        return None
    return Member(certificate, announcement)
