"""Prometheus metrics, read from the hub's counters at scrape time.

A collector rather than counters bumped on the hot path: fan-out already counts into
:class:`~broadcaster.hub.Totals`, and reading those at scrape time costs the broadcast nothing.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from broadcaster.broadcast.loop import BroadcastLoop
from broadcaster.hub import Hub
from broadcaster.sources.health import SourceHealth

COUNTERS = {
    "connections_created": "WebSocket connections accepted",
    "connections_closed": "WebSocket connections closed",
    "connections_refused": "WebSocket connections refused (capacity or shutdown)",
    "broadcasts": "metrics_update messages handed to clients",
    "errors": "error messages sent to clients",
    "slow_consumers_closed": "connections closed for not reading fast enough (4008)",
    "replaced_updates": "unsent updates replaced by a newer one of their topic (latest wins)",
    "heartbeat_timeouts": "connections closed for silence (4000)",
    "oversized_messages": "connections closed for an oversized message (1009)",
}


class ServiceCollector(Collector):
    """Exposes the hub's totals, subscribers per topic and the database's health."""

    def __init__(self, hub: Hub, health: SourceHealth, broadcaster: BroadcastLoop) -> None:
        self._hub = hub
        self._health = health
        self._broadcaster = broadcaster

    def collect(self) -> Iterator[Metric]:
        totals = self._hub.totals.as_dict()
        for name, documentation in COUNTERS.items():
            yield CounterMetricFamily(f"broadcaster_{name}", documentation, value=totals[name])
        errors = CounterMetricFamily(
            "broadcaster_connection_errors",
            "unforeseen errors that ended one connection, by stage (see containment.py)",
            labels=["stage"],
        )
        for stage, count in self._hub.containment.counts().items():
            errors.add_metric([stage], count)
        yield errors
        yield GaugeMetricFamily(
            "broadcaster_connections_active",
            "open WebSocket connections",
            value=len(self._hub.connections),
        )
        subscribers = GaugeMetricFamily(
            "broadcaster_topic_subscribers", "subscribers per topic", labels=["topic"]
        )
        queries = CounterMetricFamily(
            "broadcaster_topic_queries", "queries per topic", labels=["topic"]
        )
        failures = CounterMetricFamily(
            "broadcaster_topic_query_failures", "failed queries per topic", labels=["topic"]
        )
        for topic, count in self._hub.subscriber_counts().items():
            subscribers.add_metric([topic], count)
            state = self._broadcaster.states[topic]
            queries.add_metric([topic], state.queries)
            failures.add_metric([topic], state.failures)
        yield subscribers
        yield queries
        yield failures
        yield GaugeMetricFamily(
            "broadcaster_influxdb_healthy",
            "1 if the latest query succeeded",
            value=int(self._health.healthy),
        )


def build_registry(hub: Hub, health: SourceHealth, broadcaster: BroadcastLoop) -> CollectorRegistry:
    """A registry holding only this service's metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServiceCollector(hub, health, broadcaster))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The registry in Prometheus text format."""
    return generate_latest(registry)
