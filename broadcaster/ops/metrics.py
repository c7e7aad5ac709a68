"""Prometheus metrics, generated at scrape time from the hub's snapshot.

A collector rather than counters bumped on the hot path: fan-out already counts into
:class:`~broadcaster.counters.Counters`, and reading those at scrape time costs the broadcast
nothing. Every counter of :data:`~broadcaster.counters.COUNTERS` is a family here, named and
explained there, so /metrics cannot drift from the status API or the stats line. Durations
are histograms read the same way from the hub's :class:`~broadcaster.timings.Timings` (why
bucket arrays and not ``prometheus_client.Histogram``: see that module). The process
families (``process_*``) come from prometheus_client's ``ProcessCollector``, which reads
/proc at scrape time.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from broadcaster import __version__
from broadcaster.broadcast.loop import BroadcastLoop
from broadcaster.counters import COUNTERS
from broadcaster.hub import Hub
from broadcaster.ops.notify.counts import NotificationCounts
from broadcaster.sources.health import SourceHealth
from broadcaster.timings import Histogram


class ServiceCollector(Collector):
    """Exposes the hub's totals and timings, subscribers per topic, the topics' update ages,
    the database's health and the version."""

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
        yield from self._durations()
        yield self._update_ages()
        build = GaugeMetricFamily(
            "broadcaster_build_info", "always 1: the running version", labels=["version"]
        )
        build.add_metric([__version__], 1)
        yield build

    def _durations(self) -> Iterator[Metric]:
        """The hub's timings (:mod:`broadcaster.timings`) as histograms."""
        timings = self._hub.timings
        connection = timings.connection_duration
        yield _histogram(
            "broadcaster_connection_duration_seconds",
            "how long closed connections lasted",
            [((), connection)],
        )
        yield _histogram(
            "broadcaster_tick_duration_seconds",
            "from a tick's start to its last frame handed to the sockets (ticks with queries)",
            [((), timings.tick_duration)],
        )
        yield _histogram(
            "broadcaster_query_duration_seconds",
            "how long one topic query took (answered, failed or timed out), per topic",
            [((topic,), histogram) for topic, histogram in timings.query_duration.items()],
            labels=("topic",),
        )

    def _update_ages(self) -> Metric:
        """Per topic whose data says when its newest point was taken (``asOf``), how old
        that point is now; over a tenant topic's channels, the oldest."""
        ages = GaugeMetricFamily(
            "broadcaster_update_age_seconds",
            "age of the newest point in a topic's last good value (its asOf), per topic",
            labels=["topic"],
        )
        now = time.time()
        oldest: dict[str, float] = {}
        for channel, state in self._broadcaster.channels.items():
            if state.as_of_unix_s is not None:
                age = now - state.as_of_unix_s
                oldest[channel.topic] = max(age, oldest.get(channel.topic, age))
        for topic, age in oldest.items():
            ages.add_metric([topic], age)
        return ages


def _histogram(
    name: str,
    documentation: str,
    histograms: list[tuple[tuple[str, ...], Histogram]],
    *,
    labels: tuple[str, ...] = (),
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation, labels=list(labels))
    for label_values, histogram in histograms:
        family.add_metric(list(label_values), histogram.cumulative(), histogram.sum)
    return family


def build_registry(
    hub: Hub,
    health: SourceHealth,
    broadcaster: BroadcastLoop,
    notifications: NotificationCounts | None = None,
) -> CollectorRegistry:
    """A registry holding only this service's metrics (``notifications``: the notifier's
    counts; without it, the family is there with every count at 0)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServiceCollector(hub, health, broadcaster))
    # process_*: resident memory, open and max file descriptors, CPU seconds, start time,
    # read from /proc at scrape time (on a system without /proc, the family is absent).
    ProcessCollector(registry=registry)
    registry.register(notifications if notifications is not None else NotificationCounts())
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The registry in Prometheus text format."""
    return generate_latest(registry)
