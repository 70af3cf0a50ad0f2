"""Letting nodes in: the hub issues one-time join tokens and redeems them.

The token itself is signed (see `tokens`); the hub also records every token it issued in
`<home>/mesh/invites.json`, so a token works once, and only if this hub issued it.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from shoal import audit
from shoal.config import Home
from shoal.errors import ConflictError, RefusedError, TokenError, UsageError
from shoal.mesh.authority import found_authority
from shoal.mesh.files import JsonFile, mesh_lock
from shoal.mesh.membership import Membership
from shoal.mesh.tls import ca_fingerprint
from shoal.mesh.tokens import Certificate, issue_join_token, read_join_token, sign_certificate
from shoal.names import check_name

__all__ = ["Admission", "Invites", "parse_duration"]

_DURATION = re.compile(r"(\d{1,6})([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_TTL_SECONDS = 30 * 86400


def parse_duration(text: str, *, most_days: int = MAX_TTL_SECONDS // 86400) -> int:
    """Seconds in a duration such as `90s`, `15m`, `24h` or `7d` (at most `most_days`)."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise UsageError(f"invalid duration {text!r}: use a number and s, m, h or d (e.g. 24h)")
    seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if not 0 < seconds <= most_days * 86400:
        raise UsageError(f"invalid duration {text!r}: must be more than 0 and at most {most_days}d")
    return seconds


@dataclass(frozen=True)
class Admission:
    """What a new member receives: the hub's identity, its certificate and the members."""

    hub: str
    hub_key: bytes
    certificate: Certificate
    members: list[dict[str, Any]]
    tls_certificate: bytes = b""  # the new node's TLS certificate, signed by the mesh CA
    ca: bytes = b""  # the mesh CA certificate


class Invites:
    """The hub's record of issued join tokens."""

    def __init__(self, home: Home, membership: Membership) -> None:
        self.home = home
        self.membership = membership
        self._file = JsonFile(home.root / "mesh" / "invites.json")

    def _require_hub(self) -> None:
        if self.membership.hub != self.home.settings.name:
            raise RefusedError(
                f"only the hub ('{self.membership.hub}') can invite nodes into this mesh"
            )

    def issue(self, name: str, region: str, ttl_seconds: int) -> tuple[str, int]:
        """Make a one-time token for node `name`; gives the token and its expiry (epoch s)."""
        check_name(name, "node")
        if not region or len(region) > 63 or not region.replace("-", "").isalnum():
            raise UsageError(f"invalid region {region!r}: letters, digits and '-' (e.g. eu-de)")
        self.membership.found()
        self._require_hub()
        if name in self.membership.members():
            raise ConflictError(f"node '{name}' is already a member of this mesh")
        if name in self.membership.revoked_nodes():
            raise RefusedError(f"node '{name}' was revoked; invite it under a new name")
        authority = found_authority(self.home)
        token, claims = issue_join_token(
            self.home.key(),
            self.home.settings.name,
            name,
            region,
            ttl_seconds,
            ca_fingerprint(authority.pem),
        )
        with mesh_lock(self.home.root):
            issued = dict(self._file.read({}))
            issued[claims.token_id] = {
                "name": name,
                "region": region,
                "expires": claims.expires,
                "used_at": None,
            }
            self._file.write(_without_stale(issued))
        return token, claims.expires

    def redeem(self, token: str, public_key: bytes, tls_public_key: bytes = b"") -> Admission:
        """Check a join token and admit the node holding `public_key` (Ed25519, raw) and
        `tls_public_key` (P-256, PEM: signed into its TLS certificate); a token works once."""
        self._require_hub()
        if not isinstance(public_key, bytes) or len(public_key) != 32:
            raise UsageError("the joining node's public key must be 32 raw Ed25519 bytes")
        claims = read_join_token(token, self.membership.hub_public)
        authority = found_authority(self.home)
        # Before the token is spent: a bad key must not cost the new node its invitation.
        tls_certificate = (
            authority.issue(claims.name, tls_public_key, self.home.settings.tls_cert_hours)
            if tls_public_key
            else b""
        )
        if claims.name in self.membership.revoked_nodes():
            raise RefusedError(f"node '{claims.name}' was revoked; invite it under a new name")
        with mesh_lock(self.home.root):
            issued = dict(self._file.read({}))
            record = issued.get(claims.token_id)
            if record is None:
                raise TokenError("this join token was not issued by this hub")
            if record.get("used_at") is not None:
                raise TokenError("this join token has already been used")
            if claims.name in self.membership.members():
                raise ConflictError(f"node '{claims.name}' is already a member of this mesh")
            record = dict(record, used_at=time.time())
            issued[claims.token_id] = record
            self._file.write(issued)
        certificate = sign_certificate(
            self.home.key(), self.home.settings.name, claims.name, claims.region, public_key
        )
        self.membership.admit(certificate)
        audit.record(
            self.home,
            "join",
            f"node:{claims.name}",
            region=claims.region,
            token_id=claims.token_id,
        )
        return Admission(
            hub=self.home.settings.name,
            hub_key=self.home.key().public_bytes,
            certificate=certificate,
            members=self.membership.records(),
            tls_certificate=tls_certificate,
            ca=authority.pem,
        )

    def pending(self) -> list[dict[str, Any]]:
        """Unused, unexpired invitations."""
        now = time.time()
        return [
            {"token_id": token_id, **record}
            for token_id, record in sorted(dict(self._file.read({})).items())
            if record.get("used_at") is None and record.get("expires", 0) > now
        ]


def _without_stale(issued: dict[str, Any]) -> dict[str, Any]:
    """Forget tokens expired more than a day ago (a used or expired token stays refused
    by its signature's expiry anyway)."""
    cutoff = time.time() - 86400
    return {k: v for k, v in issued.items() if v.get("expires", 0) > cutoff}
