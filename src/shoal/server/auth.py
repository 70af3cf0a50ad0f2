"""Who is calling: every HTTP request names its caller, or is refused.

Two kinds of caller come in:

* **people and services** with a user token the hub signed (`authorization: Bearer ...`),
  checked here: hub signature, expiry, revocation;
* **nodes of the mesh**, with a request token signed by their own Ed25519 key
  (`authorization: Shoal ...`) that binds the method, path and body, is valid for a
  minute and is accepted once. Over TLS a node must also show its own certificate (mutual
  TLS): the certificate's node and the signer must be the same.

A request signed by this node's own key comes from its own home (the CLI with `--at` on the
same machine): it is the node's owner. Nothing else gets in; only `/health`, `/metrics`,
the OpenAPI spec, the mesh CA certificate and joining (which carries its own token) are
open, and none of those shows data.
"""

from __future__ import annotations

from fastapi import Request

from shoal.errors import TokenError
from shoal.mesh.tokens import read_request_token, request_caller
from shoal.mesh.users import principal_of
from shoal.mesh.wire import AUTH_SCHEME
from shoal.node import Node
from shoal.policy import Principal
from shoal.server.peer import ABSENT, peer_of_scope

__all__ = ["member_calling", "principal_calling"]

_SIGN_IN = (
    "this node answers only members of its mesh: use a profile (`--profile FILE`, "
    "`shoal user add` on the hub makes one) or a node's home"
)


def principal_calling(node: Node, request: Request, body: bytes) -> Principal:
    """Who asks: a user (checked token) or a node (checked signature); TokenError if the
    request says neither."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return principal_of(token.strip(), node.membership)
    if scheme == AUTH_SCHEME:
        caller = member_calling(node, request, body)
        return Principal.local(caller) if caller == node.name else Principal.of_node(caller)
    raise TokenError(_SIGN_IN)


def member_calling(
    node: Node, request: Request, body: bytes = b"", *, certificate: bool = True
) -> str:
    """The member that signed this request; TokenError if none did, the signature is bad
    or was seen before, or (with `certificate`, over TLS) the connection's certificate is
    not that member's."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme != AUTH_SCHEME or not token:
        raise TokenError(
            "this endpoint is for nodes of the mesh: sign the request",
            hint=_SIGN_IN if scheme.lower() == "bearer" else None,
        )
    caller = request_caller(token)
    member = node.membership.members().get(caller)
    if member is None:
        if caller in node.membership.revoked_nodes():
            raise TokenError(f"node '{caller}' was revoked from this mesh")
        raise TokenError(f"'{caller}' is not a member of this mesh")
    claims = read_request_token(
        token,
        member.public_key,
        audience=node.name,
        method=request.method,
        path=request.url.path,
        body=body,
    )
    peer = peer_of_scope(request.scope)
    if certificate and peer is not ABSENT and peer != caller:
        shown = f"the certificate of '{peer}'" if peer else "no certificate"
        raise TokenError(
            f"a call signed by '{caller}' came with {shown}: nodes call over mutual TLS "
            "with their own certificate"
        )
    node.seen_requests.check(claims)
    return caller
