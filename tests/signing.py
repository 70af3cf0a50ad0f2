"""Signing in-process test clients as a node: Starlette's TestClient is built on httpx2,
whose `Auth` is its own class, so the node signer (`shoal.credentials.SignedByNode`) is
mirrored for it here."""

from __future__ import annotations

import httpx2

from shoal.config import Home
from shoal.mesh.tokens import sign_request
from shoal.mesh.wire import AUTH_SCHEME


class NodeSigner(httpx2.Auth):
    """Signs each request with the key of the node at `home`, for node `audience`."""

    requires_request_body = True

    def __init__(self, home: Home, audience: str) -> None:
        self.home = home
        self.audience = audience

    def auth_flow(self, request):
        token = sign_request(
            self.home.key(),
            self.home.settings.name,
            self.audience,
            request.method,
            request.url.path,
            request.content,
        )
        request.headers["authorization"] = f"{AUTH_SCHEME} {token}"
        yield request
