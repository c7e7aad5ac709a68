"""Every service-wide duration distribution, once, with its buckets and help text.

:mod:`broadcaster.counters` holds what is counted; this module holds what is timed: how long
connections last, how long a tick takes, how long each topic's query takes. Like the counters,
one :class:`Timings` instance lives on the hub, whoever measures writes into it at the moment
the event ends, and the Prometheus collector reads it at scrape time.

Why bucket arrays rather than ``prometheus_client.Histogram`` objects: the collector design
stays whole (every family comes from one ``collect()`` over the service's own state, with no
module-level registry and no metric objects to keep in step with it), an observation is a
bisect and two additions with no lock (everything runs on the Trio thread), and tests read
the counts directly. An observation happens once per closed connection, once per tick and
once per query: never per delivery.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial

# A dashboard session lasts from seconds (a reconnect storm, a page reloaded) to days (a wall
# screen): the low buckets separate churn, the high ones the long-lived screens.
CONNECTION_DURATION_BUCKETS_S = (1.0, 10.0, 60.0, 300.0, 1800.0, 3600.0, 14400.0, 86400.0, 604800.0)
# A tick is a few milliseconds of work around the slowest query, which is bounded by
# --query-timeout-ms (default 5 s); the interval (default 10 s) is the top bucket that matters.
TICK_DURATION_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# A healthy InfluxQL query answers in milliseconds to a second; the query timeout (default 5 s)
# ends the rest, so buckets above it would stay empty.
QUERY_DURATION_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Histogram:
    """Counts of observations per bucket (not cumulative), their sum and their number."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """Count one observation (in seconds)."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.count += 1
        self.sum += value

    def cumulative(self) -> list[tuple[str, float]]:
        """``(le, count)`` pairs as Prometheus exposes them, ending with ``+Inf``."""
        running = 0
        buckets = []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), float(running)))
        return buckets


@dataclass(slots=True)
class Timings:
    """Durations since the service started (Prometheus: ``broadcaster_<field>_seconds``)."""

    # Observed by the hub when it forgets a connection.
    connection_duration: Histogram = field(
        default_factory=partial(Histogram, CONNECTION_DURATION_BUCKETS_S)
    )
    # Observed by the broadcast loop: from tick start to the last frame handed to the sockets.
    tick_duration: Histogram = field(default_factory=partial(Histogram, TICK_DURATION_BUCKETS_S))
    # Per topic name (never a tenant), observed by the broadcast loop after each query.
    query_duration: dict[str, Histogram] = field(default_factory=dict)

    def observe_query(self, topic: str, seconds: float) -> None:
        """Count one query of ``topic`` that took ``seconds`` (answered, failed or timed out)."""
        histogram = self.query_duration.get(topic)
        if histogram is None:
            histogram = self.query_duration[topic] = Histogram(QUERY_DURATION_BUCKETS_S)
        histogram.observe(value=seconds)
