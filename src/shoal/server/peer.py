"""Which mesh node is on the other end of an HTTP connection.

uvicorn does not hand the TLS client certificate to the app, so the server runs uvicorn's
h11 protocol with one addition: when a connection is made over TLS, the node named by the
verified client certificate (the TLS stack already checked it against the mesh CA) is put
into every request's scope as `scope["extensions"]["shoal.peer"]`: a node name, or None
for a client that showed no certificate (people and tools, who come with tokens). Over
plain HTTP (TLS off, or in-process tests) the key is absent.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from shoal.mesh.tls import node_of_peer

__all__ = ["ABSENT", "PEER_KEY", "PeerAwareH11", "peer_of_scope"]

PEER_KEY = "shoal.peer"
ABSENT = object()  # the connection is not TLS


class PeerAwareH11(H11Protocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is None:
            return
        peer = node_of_peer(ssl_object.getpeercert())
        app = self.app

        async def with_peer(scope: Any, receive: Any, send: Any) -> None:
            extensions = dict(scope.get("extensions") or {})
            extensions[PEER_KEY] = peer
            await app({**scope, "extensions": extensions}, receive, send)

        self.app = with_peer


def peer_of_scope(scope: Any) -> object:
    """The node the connection's certificate names, None for no certificate, or `ABSENT`
    when the connection is not TLS at all."""
    return (scope.get("extensions") or {}).get(PEER_KEY, ABSENT)
