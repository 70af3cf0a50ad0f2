"""Certificates renew themselves: a serving node asks for a new one before its own ends.

Once a third of the certificate's life is left (`tls.RENEW_WHEN_LEFT`), the node makes a new
key and asks the hub to certify it (the hub signs its own with its CA), then serves it:
new HTTP handshakes use it at once and the Flight server restarts on its port. A hub that
cannot be reached is asked again at the next check; the old certificate serves meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from shoal.mesh.authority import certify_self
from shoal.mesh.joining import request_certificate
from shoal.mesh.tls import NodeTLS
from shoal.node import Node

__all__ = ["Renewer"]

log = logging.getLogger("shoal.tls")

MAX_CHECK_SECONDS = 60.0
MIN_CHECK_SECONDS = 0.5


class Renewer:
    def __init__(self, node: Node, on_renewed: Callable[[], None]) -> None:
        self.node = node
        self.tls = NodeTLS(node.home.root)
        self.on_renewed = on_renewed

    def check_seconds(self) -> float:
        """How often to look: a thirtieth of the certificate's life, within bounds."""
        life = self.node.home.settings.tls_cert_hours * 3600
        return max(MIN_CHECK_SECONDS, min(MAX_CHECK_SECONDS, life / 30))

    def renew_if_due(self) -> bool:
        """Renew when due; gives whether it did."""
        if not self.tls.ready() or not self.tls.needs_renewal():
            return False
        if self.node.membership.hub == self.node.name:
            certify_self(self.node.home)
        else:
            request_certificate(self.node.home, self.node.membership)
        log.info("renewed this node's TLS certificate; valid until %s", self.tls.expires())
        return True

    async def run(self) -> None:
        """Run until cancelled."""
        while True:
            try:
                if self.node.membership.joined() and await asyncio.to_thread(self.renew_if_due):
                    await asyncio.to_thread(self.on_renewed)
            except Exception as exc:
                log.warning("renewing the TLS certificate failed (will retry): %s", exc)
            await asyncio.sleep(self.check_seconds())
