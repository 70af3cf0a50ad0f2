"""Signing in-process test clients as a node: Starlette's TestClient is built on httpx2,
whose `Auth` is its own class, so the node signer (`shoal.credentials.SignedByNode`) is
mirrored for it here, over the same signing step."""

from __future__ import annotations

import httpx2

from shoal.config import Home
from shoal.mesh.peers import signed_headers


class NodeSigner(httpx2.Auth):
    """Signs each request with the key of the node at `home`, for node `audience`."""

    requires_request_body = True

    def __init__(self, home: Home, audience: str) -> None:
        self.home = home
        self.audience = audience

    def auth_flow(self, request):
        request.headers.update(
            signed_headers(
                self.home, self.audience, request.method, request.url.path, request.content
            )
        )
        yield request
