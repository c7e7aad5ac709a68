"""``broadcaster_notifications_total{event,outcome}``: what became of each notification.

One count per destination (URL) a notification was for: ``sent`` (the receiver accepted it,
perhaps after retries), ``failed`` (every attempt failed) or ``dropped`` (never attempted to
the end: the queue was full, or the service stopped first). Every label pair starts at 0, so
an alert on ``increase(...[15m]) > 0`` sees the first failure.
"""

from __future__ import annotations

from collections.abc import Iterator
from enum import StrEnum

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from broadcaster.ops.notify.events import EventName

METRIC = "broadcaster_notifications"
HELP = (
    "notifications per destination by event and outcome (sent, failed after retries, "
    "dropped: queue full or service stopping)"
)


class Outcome(StrEnum):
    """What became of one notification to one destination."""

    SENT = "sent"
    FAILED = "failed"
    DROPPED = "dropped"


class NotificationCounts(Collector):
    """The counts, and their Prometheus family at scrape time (the sender pays one ``+=``)."""

    def __init__(self) -> None:
        self._counts = {(event, outcome): 0 for event in EventName for outcome in Outcome}

    def add(self, event: EventName, outcome: Outcome) -> None:
        """Count one notification to one destination."""
        self._counts[event, outcome] += 1

    def get(self, event: EventName, outcome: Outcome) -> int:
        """The count so far."""
        return self._counts[event, outcome]

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(METRIC, HELP, labels=["event", "outcome"])
        for (event, outcome), count in self._counts.items():
            family.add_metric([event.value, outcome.value], count)
        yield family
