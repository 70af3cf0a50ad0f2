"""Who is in the mesh: the hub's identity and every member's certificate and endpoints.

Stored in `<home>/mesh/mesh.json`. Each member is two signed tokens: a certificate from the
hub (name, region, public key) and the member's own announcement of its endpoints. Records
from peers are checked before they are kept, so a member list can be relayed by any node and
still be trusted; a record that does not verify is dropped and logged.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from shoal.config import Home
from shoal.crypto import public_key_from_bytes
from shoal.errors import NotFoundError, TokenError
from shoal.mesh.files import JsonFile, mesh_lock
from shoal.mesh.tokens import (
    Announcement,
    Certificate,
    read_announcement,
    read_certificate,
    sign_announcement,
    sign_certificate,
)

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
        """Every verified member by name (this node included)."""
        state = self._state()
        if self._cache_key != self._file.generation:
            hub_public = public_key_from_bytes(base64.b64decode(state["hub_key"]))
            members = {}
            for record in state.get("members", []):
                member = _verified(record, hub_public)
                if member is not None:
                    members[member.name] = member
            self._members, self._cache_key = members, self._file.generation
        return dict(self._members)

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
    ) -> Member:
        """Sign and record this node's own endpoints and the replicas it holds (what is
        not given stays as announced before); gives the updated member."""
        me = self.member(self.home.settings.name)
        announcement = sign_announcement(
            self.home.key(),
            me.name,
            me.http if http is None else http,
            me.flight if flight is None else flight,
            me.holds if holds is None else holds,
            (me.announcement.revoked if me.announcement else frozenset())
            if revoked is None
            else revoked,
        )
        updated = Member(me.certificate, announcement)
        self.merge([updated.record()])
        return updated

    def merge(self, records: list[dict[str, Any]]) -> list[str]:
        """Keep every record that verifies and is news; gives the names that changed."""
        if not isinstance(records, list) or len(records) > MAX_MEMBERS:
            raise TokenError("a member list must be a list of at most 1000 records")
        changed: list[str] = []
        with mesh_lock(self.home.root):
            state = self._state()
            hub_public = public_key_from_bytes(base64.b64decode(state["hub_key"]))
            current = {}
            for record in state.get("members", []):
                member = _verified(record, hub_public)
                if member is not None:
                    current[member.name] = member
            for record in records:
                member = _verified(record, hub_public)
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


def _verified(record: object, hub_public: Ed25519PublicKey) -> Member | None:
    """The member a relayed record describes, or None (logged) if it does not verify."""
    if not isinstance(record, dict):
        return None
    try:
        certificate = read_certificate(record.get("certificate", ""), hub_public)
        announcement = None
        if record.get("announcement"):
            announcement = read_announcement(
                record["announcement"], public_key_from_bytes(certificate.public_key)
            )
            if announcement.name != certificate.name:
                raise TokenError("the announcement is for another node")
    except TokenError as exc:
        log.warning("dropped a member record that does not verify: %s", exc)
        return None
    return Member(certificate, announcement)
