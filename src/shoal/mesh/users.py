"""People and services of the mesh: the hub issues their tokens and profiles, and revokes them.

A user token is signed by the hub's key (see `tokens.issue_user_token`): name, role, the node
the person belongs to (for role `owner`) and attributes that row filters use. Every node
checks it with the hub's key from the member list, so no node has to ask the hub. A revoked
token's id travels in the hub's signed announcement, which every node relays, so revocation
reaches every node within a few pings.

The hub keeps `<home>/mesh/users.json`: per user, the role, attributes and the ids of the
tokens it issued (never the tokens themselves).

A profile file holds what a client needs: the endpoint and the token (mode 0600).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shoal import audit
from shoal.config import Home
from shoal.errors import NotFoundError, RefusedError, TokenError, UsageError
from shoal.mesh.files import JsonFile, mesh_lock
from shoal.mesh.membership import Membership
from shoal.mesh.tokens import issue_user_token, read_user_token
from shoal.names import is_valid_name
from shoal.policy import BUILT_IN_ROLES, Principal

__all__ = ["Profile", "Users", "principal_of", "read_profile", "write_profile"]

MAX_PROFILE_BYTES = 64 * 1024


class Users:
    """The hub's register of people and services."""

    def __init__(self, home: Home, membership: Membership) -> None:
        self.home = home
        self.membership = membership
        self._file = JsonFile(home.root / "mesh" / "users.json")

    def _hub_only(self) -> None:
        if self.membership.hub != self.home.settings.name:
            raise RefusedError(
                f"only the hub ('{self.membership.hub}') manages the mesh's users",
                hint="run this command on the hub's home",
            )

    def add(self, name: str, role: str, attrs: dict[str, str], node: str, ttl_seconds: int) -> str:
        """Issue a token for `name`; gives the token."""
        self._hub_only()
        if not is_valid_name(name):
            raise UsageError(f"invalid user name {name!r}: lowercase letters, digits, _")
        if not is_valid_name(role.replace("-", "_")):
            raise UsageError(f"invalid role {role!r}: built in are {', '.join(BUILT_IN_ROLES)}")
        if node and node not in self.membership.members():
            raise NotFoundError(f"no node '{node}' in the mesh")
        if role == "owner" and not node:
            raise UsageError("role owner needs --node: the node whose products they own")
        if ttl_seconds <= 0 or ttl_seconds > 10 * 365 * 86400:
            raise UsageError("--expires must be between 1 second and 10 years")
        token, claims = issue_user_token(
            self.home.key(),
            self.home.settings.name,
            name,
            role,
            node=node,
            attrs=attrs,
            ttl_seconds=ttl_seconds,
        )
        with mesh_lock(self.home.root):
            users = dict(self._file.read({}))
            record = dict(users.get(name, {}))
            record.update(role=role, node=node, attrs=attrs, updated=time.time())
            record["tokens"] = [*record.get("tokens", []), claims.token_id]
            users[name] = record
            self._file.write(users)
        audit.record(
            self.home,
            "user-add",
            f"local:{self.home.settings.name}",
            user=name,
            role=role,
            node=node or None,
            attrs=attrs or None,
            token_id=claims.token_id,
        )
        return token

    def revoke(self, name: str) -> list[str]:
        """Revoke every token of `name`, at every node; gives their ids."""
        self._hub_only()
        with mesh_lock(self.home.root):
            users = dict(self._file.read({}))
            record = users.get(name)
            if record is None:
                raise NotFoundError(f"no user '{name}' in this mesh")
            record = dict(record, revoked=True, updated=time.time())
            users[name] = record
            self._file.write(users)
        revoked = self.revoked() | frozenset(record.get("tokens", []))
        self.membership.announce(revoked=frozenset(revoked))
        audit.record(self.home, "revocation", f"local:{self.home.settings.name}", user=name)
        return list(record.get("tokens", []))

    def revoked(self) -> frozenset[str]:
        ids: set[str] = set()
        for record in dict(self._file.read({})).values():
            if record.get("revoked"):
                ids.update(record.get("tokens", []))
        return frozenset(ids)

    def list(self) -> list[dict[str, Any]]:
        return [
            {
                "name": name,
                "role": record.get("role", ""),
                "node": record.get("node", ""),
                "attrs": record.get("attrs", {}),
                "tokens": len(record.get("tokens", [])),
                "revoked": bool(record.get("revoked")),
            }
            for name, record in sorted(dict(self._file.read({})).items())
        ]


def principal_of(token: str, membership: Membership) -> Principal:
    """The person a user token names, checked: signed by the hub, unexpired, unrevoked."""
    claims = read_user_token(token, membership.hub_public)
    if claims.token_id in membership.revoked_users():
        raise TokenError(f"the token of user '{claims.name}' was revoked")
    return Principal(f"user:{claims.name}", claims.role, claims.node, claims.attrs, token)


@dataclass(frozen=True)
class Profile:
    """What a person needs to reach the mesh: where, the CA to trust there, and a token."""

    endpoint: str
    token: str
    user: str = ""
    ca: str = ""  # the mesh CA certificate (PEM): the only one an https endpoint may show
    node: str = ""  # the node at the endpoint ("" when unknown: any node of the mesh)


def write_profile(path: Path, profile: Profile) -> None:
    """Write a profile file readable by its owner only (it holds a bearer token)."""
    data = json.dumps(
        {
            "endpoint": profile.endpoint,
            "token": profile.token,
            "user": profile.user,
            "ca": profile.ca,
            "node": profile.node,
        },
        indent=1,
    ).encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data + b"\n")
    finally:
        os.close(fd)


def read_profile(path: Path) -> Profile:
    """Read a profile file with clear errors."""
    try:
        size = path.stat().st_size
        if size > MAX_PROFILE_BYTES:
            raise UsageError(f"profile {path} is larger than 64 KiB; is it a profile?")
        data = json.loads(path.read_bytes())
        endpoint, token = str(data["endpoint"]), str(data["token"])
        ca, node = str(data.get("ca", "")), str(data.get("node", ""))
    except FileNotFoundError as exc:
        raise UsageError(f"no profile file {path}") from exc
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UsageError(f"profile {path} is not a Shoal profile: {exc}") from exc
    if not endpoint.startswith(("http://", "https://")):
        raise UsageError(f"profile {path} names no http(s) endpoint")
    if endpoint.startswith("https://") and "BEGIN CERTIFICATE" not in ca:
        raise UsageError(f"profile {path} has no mesh CA certificate for its https endpoint")
    if node and not is_valid_name(node):
        raise UsageError(f"profile {path} names an invalid node {node!r}")
    return Profile(endpoint, token, str(data.get("user", "")), ca, node)
