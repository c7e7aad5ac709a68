"""Prometheus metrics, generated at scrape time from the hub's snapshot.

A collector rather than counters bumped on the hot path: fan-out already counts into
:class:`~broadcaster.counters.Counters`, and reading those at scrape time costs the broadcast
nothing. Every counter of :data:`~broadcaster.counters.COUNTERS` is a family here, named and
explained there, so /metrics cannot drift from the status API or the stats line.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from broadcaster.broadcast.loop import BroadcastLoop
from broadcaster.counters import COUNTERS
from broadcaster.hub import Hub
from broadcaster.sources.health import SourceHealth


class ServiceCollector(Collector):
    """Exposes the hub's totals, subscribers per topic and the database's health."""

    def __init__(self, hub: Hub, health: SourceHealth, broadcaster: BroadcastLoop) -> None:
        self._hub = hub
        self._health = health
        self._broadcaster = broadcaster

    def collect(self) -> Iterator[Metric]:
        snapshot = self._hub.snapshot()
        for spec in COUNTERS:
            yield CounterMetricFamily(spec.metric, spec.help, value=snapshot.counters[spec.name])
        errors = CounterMetricFamily(
            "broadcaster_connection_errors",
            "unforeseen errors that ended one connection, by stage (see containment.py)",
            labels=["stage"],
        )
        for stage, count in snapshot.connection_errors.items():
            errors.add_metric([stage], count)
        yield errors
        yield GaugeMetricFamily(
            "broadcaster_connections_active",
            "open WebSocket connections, not closing",
            value=snapshot.active,
        )
        yield GaugeMetricFamily(
            "broadcaster_connections_tracked",
            "registered WebSocket connections, closing ones included",
            value=snapshot.tracked,
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
        for topic, count in snapshot.subscribers.items():
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
