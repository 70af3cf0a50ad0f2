"""How a client proves who it is to a node, and checks which node it reached.

Two ways in, as the server's `auth` module takes them:

* a **profile** (from `shoal user add` on the hub): the user's token as a bearer token, and
  the mesh CA as the only CA an https endpoint may show; the node at the endpoint, when the
  profile names it, must be that node (its server name is sent as TLS SNI);
* a **node home** on this machine: each request signed with the node's own key (bound to
  the call, valid once) and, over https, the node's certificate shown (mutual TLS). The
  node reached is looked up by URL in the member list, or asked (`/health`) over TLS
  checked against the mesh CA.
"""

from __future__ import annotations

import ssl
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import httpx

from shoal.config import Home
from shoal.errors import NotFoundError, UnavailableError
from shoal.mesh.membership import Membership
from shoal.mesh.peers import signed_headers
from shoal.mesh.tls import NodeTLS, server_name, user_context
from shoal.mesh.users import Profile

__all__ = ["Credentials", "SignedByNode", "of_home", "of_profile"]


@dataclass
class Credentials:
    """What a remote `Mesh` sends and checks."""

    verify: ssl.SSLContext | bool = True
    auth: httpx.Auth | None = None
    headers: dict[str, str] = field(default_factory=dict)
    node: str | None = None  # the node the endpoint must be (None: any node of the mesh)

    def extensions(self) -> dict[str, Any]:
        return {"sni_hostname": server_name(self.node)} if self.node else {}


class SignedByNode(httpx.Auth):
    """Signs each request with a node's key for node `audience`, over its exact body."""

    requires_request_body = True

    def __init__(self, home: Home, audience: str) -> None:
        self.home = home
        self.audience = audience

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response]:
        request.headers.update(
            signed_headers(
                self.home, self.audience, request.method, request.url.path, request.content
            )
        )
        yield request


def of_profile(profile: Profile, url: str) -> Credentials:
    """A user's credentials; `url` other than the profile's endpoint may be any node."""
    node = profile.node if url.rstrip("/") == profile.endpoint.rstrip("/") else ""
    verify: ssl.SSLContext | bool = True
    if url.startswith("https://") and profile.ca:
        verify = user_context(profile.ca.encode("ascii"), node or None)
    return Credentials(
        verify=verify,
        headers={"authorization": f"Bearer {profile.token}"} if profile.token else {},
        node=node or None,
    )


def of_home(home: Home, url: str) -> Credentials:
    """A node's own credentials for calls to the node at `url`."""
    membership = Membership(home)
    tls = NodeTLS(home.root)
    verify: ssl.SSLContext | bool = True
    if url.startswith("https://"):
        tls.require()
        verify = tls.client_context()
    target = _node_at(membership, tls, url)
    return Credentials(verify=verify, auth=SignedByNode(home, target), node=target)


def _node_at(membership: Membership, tls: NodeTLS, url: str) -> str:
    wanted = url.rstrip("/")
    if membership.joined():
        for name, member in membership.members().items():
            if member.http.rstrip("/") == wanted:
                return name
    # Not in the member list (another address for the node): ask it, over TLS that any
    # certificate of the mesh CA passes, then check the node it names by its certificate.
    verify: ssl.SSLContext | bool = True
    if url.startswith("https://"):
        verify = user_context(tls.ca_pem(), None)
    try:
        with httpx.Client(verify=verify, timeout=10) as client:
            name = str(client.get(wanted + "/health").json()["node"])
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        raise UnavailableError(f"cannot reach a Shoal node at {url}: {exc}") from exc
    if membership.joined() and name not in membership.members():
        raise NotFoundError(f"the node at {url} ('{name}') is not a member of this mesh")
    return name
