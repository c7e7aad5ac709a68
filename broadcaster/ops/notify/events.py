"""The events operators are notified of: their names (a contract), titles and bodies.

A notification's title is ``<event name>: <what changed>``, so a routing rule can match on its
first word; its body is ``key: value`` lines, the same for every event first (event, node,
time), then the event's own facts::

    database_down: InfluxDB unreachable for 3 queries

    event: database_down
    node: web-1:4242
    time: 2026-11-22T00:54:14.344Z
    consecutive_failures: 3
    last_error: InfluxDB unreachable: ConnectError

Each builder below makes one event; the watchers decide when (once per transition).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from enum import StrEnum

from broadcaster.protocol import iso_now


class EventName(StrEnum):
    """Every event a notification can be about (the first word of its title)."""

    DATABASE_DOWN = "database_down"
    DATABASE_RECOVERED = "database_recovered"
    SERVICE_STARTED = "service_started"
    SERVICE_STOPPING = "service_stopping"
    CLIENTS_GONE = "clients_gone"
    HEARTBEAT_FAILURES = "heartbeat_failures"
    # The cluster's link to Redis (--redis-url): lost, and made again.
    BROKER_DOWN = "broker_down"
    BROKER_RECOVERED = "broker_recovered"


class Severity(StrEnum):
    """How the receiving service shows the notification (Apprise's notify types)."""

    INFO = "info"
    SUCCESS = "success"
    WARNING = "warning"
    FAILURE = "failure"


def node_id() -> str:
    """Which process sent a notification, when no ``--node-id`` names it: ``hostname:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True, slots=True)
class Event:
    """One notification's content: what changed, where and when."""

    name: EventName
    summary: str
    severity: Severity
    facts: tuple[tuple[str, str], ...] = ()
    node: str = field(default_factory=node_id)
    at: str = field(default_factory=iso_now)

    @property
    def title(self) -> str:
        """``<event name>: <summary>``: routing rules match the first word."""
        return f"{self.name}: {self.summary}"

    @property
    def body(self) -> str:
        """``key: value`` lines: the event, the node, the time, then the event's facts."""
        lines = [("event", str(self.name)), ("node", self.node), ("time", self.at), *self.facts]
        return "\n".join(f"{key}: {value}" for key, value in lines)


def duration_text(seconds: float) -> str:
    """``42 s``, ``12.5 min``, ``3.2 h``: short enough for a title."""
    if seconds < 120:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def database_down(consecutive_failures: int, last_error: str | None) -> Event:
    """``--notify-after-failures`` queries or pings in a row failed."""
    return Event(
        EventName.DATABASE_DOWN,
        f"InfluxDB unreachable for {consecutive_failures} queries",
        Severity.FAILURE,
        (
            ("consecutive_failures", str(consecutive_failures)),
            ("last_error", last_error or "unknown"),
        ),
    )


def database_recovered(down_s: float, failures: int) -> Event:
    """A query or ping answered again after ``database_down``."""
    return Event(
        EventName.DATABASE_RECOVERED,
        f"InfluxDB answering again after {duration_text(down_s)} down",
        Severity.SUCCESS,
        (("down_for_s", f"{down_s:.1f}"), ("failed_queries", str(failures))),
    )


def service_started(websocket_url: str, http_url: str) -> Event:
    """The service accepts connections."""
    return Event(
        EventName.SERVICE_STARTED,
        "broadcaster started",
        Severity.INFO,
        (("websocket_url", websocket_url), ("http_url", http_url)),
    )


def service_stopping(signal: str | None, clients: int) -> Event:
    """Shutdown began: ``signal`` is its cause (None: stopped by its caller, not a signal)."""
    cause = signal or "stop requested"
    return Event(
        EventName.SERVICE_STOPPING,
        f"broadcaster stopping ({cause}), {clients} clients told to reconnect",
        Severity.WARNING,
        (("signal", signal or "none"), ("clients_told", str(clients))),
    )


def clients_gone(without_clients_s: float) -> Event:
    """The service had clients and has had none for ``--notify-no-clients-after-ms``."""
    return Event(
        EventName.CLIENTS_GONE,
        f"no clients for {duration_text(without_clients_s)}",
        Severity.WARNING,
        (("without_clients_s", f"{without_clients_s:.1f}"),),
    )


def heartbeat_failures(closed: int, threshold: int, interval_s: float) -> Event:
    """More than ``--notify-heartbeat-failures`` connections closed for silence in one sweep."""
    return Event(
        EventName.HEARTBEAT_FAILURES,
        f"{closed} connections closed for silence within one heartbeat interval",
        Severity.WARNING,
        (
            ("closed_for_silence", str(closed)),
            ("threshold", str(threshold)),
            ("heartbeat_interval_s", f"{interval_s:g}"),
        ),
    )


def broker_down(broker: str, last_error: str | None) -> Event:
    """The cluster's broker became unreachable."""
    return Event(
        EventName.BROKER_DOWN,
        f"broker {broker} unreachable",
        Severity.FAILURE,
        (("broker", broker), ("last_error", last_error or "unknown")),
    )


def broker_recovered(broker: str, down_s: float) -> Event:
    """The cluster's broker answers again."""
    return Event(
        EventName.BROKER_RECOVERED,
        f"broker {broker} reachable again after {duration_text(down_s)} down",
        Severity.SUCCESS,
        (("broker", broker), ("down_for_s", f"{down_s:.1f}")),
    )
