"""A new node joins a mesh (trust the hub's CA, redeem the join token, keep what it gives),
and stays certified (a new TLS certificate from the hub before the old one ends).

The join token (signed by the hub) fixes the node's name and region and pins the mesh CA's
fingerprint; the new node fetches the CA, checks it against the pin, and from then on
talks to the hub only over TLS checked against that CA. It sends its Ed25519 identity key
and a new TLS key; the hub answers with its identity, the member list, the secret masks
hash with, and a TLS certificate for the new key, which is checked before it is kept.
"""

from __future__ import annotations

import base64
import json

import httpx

from shoal.config import Home
from shoal.crypto import key_id_of
from shoal.errors import TokenError, UnavailableError, UsageError
from shoal.mesh.authority import check_issued, new_private_key, private_key_pem, public_key_pem
from shoal.mesh.membership import Membership
from shoal.mesh.peers import ask_hub_to_join, fetch_ca, hub_answer, signed_headers
from shoal.mesh.tls import NodeTLS, server_name, user_context
from shoal.mesh.tokens import JoinClaims

__all__ = ["CERTIFICATE_PATH", "check_hub_url", "join_mesh", "request_certificate"]


def check_hub_url(hub_url: str) -> str:
    if not hub_url.startswith(("http://", "https://")):
        raise UsageError(f"invalid hub URL {hub_url!r}: want https://HOST:PORT")
    return hub_url.rstrip("/")


def join_mesh(
    home: Home, membership: Membership, hub_url: str, token: str, claims: JoinClaims
) -> None:
    """Register the new node at `home` with the hub at `hub_url` (the caller removes the
    home if this fails)."""
    hub_url = check_hub_url(hub_url)
    tls_key = new_private_key()
    ca_pem = fetch_ca(hub_url, claims.ca) if claims.ca else None
    answer = ask_hub_to_join(
        hub_url, token, home.key().public_bytes, public_key_pem(tls_key), ca_pem, claims.hub
    )
    hub_key = base64.b64decode(answer["hub_key"])
    if key_id_of(hub_key) != claims.hub_key_id:
        raise TokenError("the hub's key does not match the token; is it the right hub?")
    if ca_pem is not None:
        certificate = str(answer.get("tls_certificate", "")).encode("ascii")
        check_issued(certificate, ca_pem, claims.name, tls_key)
        NodeTLS(home.root).install(certificate, private_key_pem(tls_key), ca_pem)
    membership.adopt(
        str(answer["hub"]), hub_key, list(answer["members"]), str(answer.get("mask_secret", ""))
    )


CERTIFICATE_PATH = "/api/v1/mesh/certificate"


def request_certificate(home: Home, membership: Membership) -> None:
    """Ask the hub for a new TLS certificate for a new key, and keep both.

    The call shows no client certificate (an expired one would fail the handshake, and a
    node that was down past its certificate's end must still get back in): the request is
    signed with the node's Ed25519 key, which the hub checks as for any member's call.
    """
    hub = membership.member(membership.hub)
    if not hub.http:
        raise UnavailableError("the hub has not announced where it listens yet")
    tls = NodeTLS(home.root)
    ca_pem = tls.ca_pem()
    key = new_private_key()
    body = json.dumps({"tls_public_key": public_key_pem(key).decode("ascii")}).encode()
    headers = signed_headers(home, hub.name, "POST", CERTIFICATE_PATH, body)
    headers["content-type"] = "application/json"
    extensions = {"sni_hostname": server_name(hub.name)}
    try:
        with httpx.Client(verify=user_context(ca_pem, hub.name), timeout=30) as client:
            response = client.post(
                hub.http + CERTIFICATE_PATH, content=body, headers=headers, extensions=extensions
            )
    except httpx.HTTPError as exc:
        raise UnavailableError(f"cannot reach the hub at {hub.http}: {exc}") from exc
    certificate = str(hub_answer(response).get("tls_certificate", "")).encode("ascii")
    check_issued(certificate, ca_pem, home.settings.name, key)
    tls.install(certificate, private_key_pem(key))
