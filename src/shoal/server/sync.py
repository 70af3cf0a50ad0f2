"""What a serving node does in the background to stay in the mesh.

* **Watch**: twice a second, look for new versions of this node's own products (published by
  this process or by a CLI command on the same home) and tell every peer at once.
* **Ping**: every `ping_interval`, ping each peer with a timeout; the results make its state
  (up, suspect, down) in `PeerHealth`.
* **Pull**: from each peer that answers, fetch what changed in its catalog and member list
  since the last pull. Pulling from every peer, not just the hub, keeps the catalog complete
  while any node (the hub included) is down.
* **Replicate**: after catalog news, and every `ping_interval`, bring the copies this node
  should hold up to date (see `mesh/replication.py`), and re-hash every stored file each
  `scrub_interval`; what it holds is announced with its endpoints.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import ssl
import time
from typing import Any

import httpx

from shoal.mesh.catalog import CatalogEntry
from shoal.mesh.health import PeerHealth
from shoal.mesh.membership import Member
from shoal.mesh.peers import signed_headers
from shoal.mesh.tls import NodeTLS, server_name
from shoal.node import Node

__all__ = ["MeshSync"]

log = logging.getLogger("shoal.sync")

WATCH_INTERVAL = 0.5
GOSSIP_PATH = "/api/v1/mesh/gossip"
CATALOG_PATH = "/api/v1/mesh/catalog"


class MeshSync:
    def __init__(self, node: Node, health: PeerHealth) -> None:
        self.node = node
        self.health = health
        self.interval = node.home.settings.ping_interval
        self._cursors: dict[str, tuple[str, int]] = {}  # peer -> (catalog epoch, counter)
        self._news: dict[str, str] = {}  # peer -> its news digest at our last pull
        self._wake = asyncio.Event()
        self._replicate_now = asyncio.Event()
        self._announced: dict[str, Any] | None = None

    def wake(self) -> None:
        """Pull from peers now (news arrived); safe to call from any thread."""
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(self._wake.set)
            loop.call_soon_threadsafe(self._replicate_now.set)

    _loop: asyncio.AbstractEventLoop | None = None

    async def run(self) -> None:
        """Run until cancelled."""
        self._loop = asyncio.get_running_loop()
        timeout = httpx.Timeout(max(1.0, self.interval), connect=max(0.5, self.interval))
        async with httpx.AsyncClient(timeout=timeout, verify=self._verify()) as client:
            await asyncio.gather(self._watch(client), self._peers(client), self._replicate())

    def _verify(self) -> ssl.SSLContext | bool:
        """Mutual TLS with the mesh CA (plain HTTP peers are called without it)."""
        tls = NodeTLS(self.node.home.root)
        if not tls.ready():
            return True
        self._context = tls.client_context()
        return self._context

    _context: ssl.SSLContext | None = None

    def renewed(self) -> None:
        """A new certificate: new connections to peers show it."""
        if self._context is not None:
            NodeTLS(self.node.home.root).reload(self._context)

    # -- own products -------------------------------------------------------------------
    async def _watch(self, client: httpx.AsyncClient) -> None:
        first = True
        while True:
            try:
                changed = await asyncio.to_thread(self.node.refresh_catalog)
                me = self.node.membership.member(self.node.name).record()
                if changed or me != self._announced or first:
                    await self.tell_peers(client, changed, [me])
                    self._announced, first = me, False
            except Exception:
                log.exception("watching this node's products failed; retrying")
            await asyncio.sleep(WATCH_INTERVAL)

    async def tell_peers(
        self, client: httpx.AsyncClient, entries: list[CatalogEntry], members: list[dict[str, Any]]
    ) -> None:
        """Send news to every peer that listens; a peer that misses it pulls it later."""
        body = json.dumps(
            {"entries": [e.model_dump() for e in entries], "members": members}
        ).encode()
        peers = [
            p for p in self.node.membership.peers() if p.http and not self.health.is_down(p.name)
        ]
        await asyncio.gather(*(self._post(client, peer, body) for peer in peers))

    async def _post(self, client: httpx.AsyncClient, peer: Member, body: bytes) -> None:
        headers = signed_headers(self.node.home, peer.name, "POST", GOSSIP_PATH, body)
        headers["content-type"] = "application/json"
        try:
            response = await client.post(
                peer.http + GOSSIP_PATH, content=body, headers=headers, extensions=_named(peer)
            )
            if response.status_code >= 400:
                log.warning("peer %s refused our news: %s", peer.name, response.text[:200])
        except httpx.HTTPError as exc:
            log.debug("could not tell %s: %s", peer.name, exc)

    # -- replicas -----------------------------------------------------------------------
    async def _replicate(self) -> None:
        replicator = self.node.replicator
        next_scrub = time.monotonic() + self.node.home.settings.scrub_interval
        while True:
            try:
                await asyncio.to_thread(replicator.step)
                holds = replicator.holds()
                me = self.node.membership.member(self.node.name)
                if dict(me.holds) != holds:
                    # The watch loop tells every peer about the new announcement.
                    await asyncio.to_thread(self.node.membership.announce, None, None, holds)
                interval = self.node.home.settings.scrub_interval
                if interval > 0 and time.monotonic() >= next_scrub:
                    await asyncio.to_thread(self.node.scrub)
                    next_scrub = time.monotonic() + interval
            except Exception:
                log.exception("keeping the replicas current failed; retrying")
            self._replicate_now.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._replicate_now.wait(), timeout=self.interval)

    # -- peers --------------------------------------------------------------------------
    async def _peers(self, client: httpx.AsyncClient) -> None:
        while True:
            peers = [p for p in self.node.membership.peers() if p.http]
            await asyncio.gather(*(self._visit(client, peer) for peer in peers))
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.interval)

    async def _visit(self, client: httpx.AsyncClient, peer: Member) -> None:
        """Ping `peer` and, if it answers with news we have not pulled, pull its changes."""
        started = time.perf_counter()
        try:
            response = await client.get(peer.http + "/health", extensions=_named(peer))
            response.raise_for_status()
        except httpx.HTTPError as exc:
            self.health.missed(peer.name, str(exc) or type(exc).__name__)
            return
        self.health.answered(peer.name, time.perf_counter() - started)
        try:
            digest = str(response.json().get("news", ""))
        except (ValueError, AttributeError):
            digest = ""
        # Unchanged since the last pull (a signed request, two JSON documents and a merge
        # per peer per second made up most of an idle mesh's CPU): nothing to pull.
        if digest and self._news.get(peer.name) == digest:
            return
        epoch, since = self._cursors.get(peer.name, ("", 0))
        path = CATALOG_PATH
        headers = signed_headers(self.node.home, peer.name, "GET", path)
        try:
            response = await client.get(
                peer.http + path,
                params={"since": since, "epoch": epoch},
                headers=headers,
                extensions=_named(peer),
            )
            response.raise_for_status()
            news = response.json()
            await asyncio.to_thread(self.node.membership.merge, news.get("members", []))
            merged = await asyncio.to_thread(self.node.catalog.merge, news.get("entries", []))
            if merged:
                self._replicate_now.set()
            self._cursors[peer.name] = (str(news["epoch"]), int(news["counter"]))
            self._news[peer.name] = digest
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            log.warning("pulling the catalog from %s failed: %s", peer.name, exc)
        except Exception:
            log.exception("merging the catalog from %s failed", peer.name)


def news_digest(node: Node) -> str:
    """What a peer would pull from this node, in 16 hex digits: the catalog's position and
    the member records. Its /health answer carries it, so peers pull only when it moved.
    It says only that something changed, never what."""
    epoch, counter = node.catalog.position()
    records = json.dumps(node.membership.records(), sort_keys=True)
    return hashlib.sha256(f"{epoch}\n{counter}\n{records}".encode()).hexdigest()[:16]


def _named(peer: Member) -> dict[str, Any]:
    """Ask for the peer's server name: its certificate must be that node's."""
    return {"sni_hostname": server_name(peer.name)}
