"""Prometheus metrics of one node, in their own registry (one per server, not global)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from shoal.mesh.health import PeerState
from shoal.node import Node
from shoal.query.profile import QueryProfile

__all__ = ["Metrics"]


class _MeshCollector(Collector):
    """Gauges read at scrape time: peers by state and products in the catalog."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def collect(self) -> Iterator[GaugeMetricFamily]:
        peers = GaugeMetricFamily("shoal_peers", "Peers of this node by state", labels=["state"])
        counts = {state: 0 for state in PeerState}
        if self.node.membership.joined() and self.node.health is not None:
            for peer in self.node.membership.peers():
                counts[self.node.health.status(peer.name).state] += 1
        for state, count in counts.items():
            peers.add_metric([state.value], count)
        yield peers
        products = GaugeMetricFamily(
            "shoal_catalog_products", "Products in this node's copy of the mesh catalog"
        )
        entries = self.node.catalog.entries() if self.node.membership.joined() else []
        products.add_metric([], len(entries))
        yield products


class Metrics:
    def __init__(self, node: Node) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "shoal_http_requests",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.queries = Counter(
            "shoal_queries", "Federated queries by outcome", ["outcome"], registry=self.registry
        )
        self.query_seconds = Histogram(
            "shoal_query_seconds", "Time to plan and run a federated query", registry=self.registry
        )
        self.fragments = Counter(
            "shoal_fragments_served",
            "Query fragments this node ran for coordinators, by outcome",
            ["outcome"],
            registry=self.registry,
        )
        # The figures of `shoal explain --analyze`, for every federated query this node
        # coordinated.
        self.query_stage_seconds = Histogram(
            "shoal_query_stage_seconds",
            "Time per stage of federated queries this node coordinated",
            ["stage"],
            registry=self.registry,
        )
        self.rows_moved = Counter(
            "shoal_query_rows_moved",
            "Rows fragments sent to this node as coordinator, by the node that sent them",
            ["node"],
            registry=self.registry,
        )
        self.bytes_moved = Counter(
            "shoal_query_bytes_moved",
            "Bytes (Arrow, in memory) fragments sent to this node as coordinator, by sender",
            ["node"],
            registry=self.registry,
        )
        self.fragment_cache = Counter(
            "shoal_fragment_cache",
            "Fragments this node coordinated, answered from its exact cache or not",
            ["result"],
            registry=self.registry,
        )
        self.registry.register(_MeshCollector(node))
        node.on_query.append(self.observe)

    def observe(self, profile: QueryProfile) -> None:
        """Count one finished federated query's profile."""
        self.query_stage_seconds.labels("planning").observe(profile.planning_seconds)
        self.query_stage_seconds.labels("fragments").observe(profile.fetch_seconds)
        self.query_stage_seconds.labels("merge").observe(profile.merge_seconds)
        for run in profile.runs.values():
            self.fragment_cache.labels("hit" if run.cached else "miss").inc()
            if not run.cached:
                self.rows_moved.labels(run.node).inc(run.rows)
                self.bytes_moved.labels(run.node).inc(run.bytes)
