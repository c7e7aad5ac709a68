"""Every service-wide counter, once, with its help text: the one source of three views.

The status API's ``summary``, the Prometheus collector and the periodic stats line are all
generated from :data:`COUNTERS` (plus the per-topic and containment counts), so a counter added
here appears in all three with the same value and the same meaning. Before, each view kept its
own hand-written list, and they disagreed (what "active" meant, which counters appeared).

Who writes: whoever makes the decision, at the moment it is made, increments the field of the
one :class:`Counters` instance it was given (the hub for connections and publishes, the
connection for errors, slow consumers, oversized messages, unanswered pings and updates handed
over one by one, the outbound path for replaced updates, the heartbeat for timeouts, the
broadcast loop for skipped ticks). Plain attribute increments: the fan-out hot path pays one
``+=`` per publish, not per subscriber, and no callback chain.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any


def _counter(help_text: str, *, json: str) -> Any:
    """A counter field: starts at 0; ``json`` is its key in the status API summary."""
    return field(default=0, metadata={"help": help_text, "json": json})


@dataclass(slots=True)
class Counters:
    """Counters since the service started (Prometheus name: ``broadcaster_<field>``)."""

    connections_created: int = _counter(
        "WebSocket connections accepted", json="totalConnectionsCreated"
    )
    connections_closed: int = _counter(
        "WebSocket connections closed", json="totalConnectionsClosed"
    )
    connections_refused: int = _counter(
        "WebSocket connections refused (capacity, per-address cap or shutdown)",
        json="totalConnectionsRefused",
    )
    broadcasts: int = _counter("metrics_update messages handed to clients", json="totalBroadcasts")
    errors: int = _counter("error messages sent to clients", json="totalErrors")
    slow_consumers_closed: int = _counter(
        "connections closed for not reading fast enough (4008)", json="slowConsumersClosed"
    )
    replaced_updates: int = _counter(
        "unsent updates replaced by a newer one of their topic (latest wins)",
        json="replacedUpdates",
    )
    heartbeat_timeouts: int = _counter(
        "connections closed for silence (4000)", json="heartbeatTimeouts"
    )
    pings_unanswered: int = _counter(
        "heartbeat pings whose pong had not come by the next heartbeat", json="pingsUnanswered"
    )
    oversized_messages: int = _counter(
        "connections closed for an oversized message (1009)", json="oversizedMessages"
    )
    origins_refused: int = _counter(
        "WebSocket handshakes refused for their Origin (HTTP 403)", json="originsRefused"
    )
    auth_failures: int = _counter(
        "connections closed for a missing or invalid token (4001)", json="authFailures"
    )
    tokens_expired: int = _counter(
        "connections closed because their token expired (4005)", json="tokensExpired"
    )
    connections_replaced: int = _counter(
        "connections closed for a newer one of the same identity (4009)",
        json="connectionsReplaced",
    )
    forbidden_subscriptions: int = _counter(
        "subscribe requests refused by the token's topics or tenant (forbidden_topic)",
        json="forbiddenSubscriptions",
    )
    ticks_skipped: int = _counter(
        "broadcast ticks skipped because the one before overran the interval",
        json="ticksSkipped",
    )

    cluster_fallback_queries: int = _counter(
        "queries made for this node's own subscribers while Redis was unreachable (each may "
        "duplicate another node's)",
        json="clusterFallbackQueries",
    )

    def as_dict(self) -> dict[str, int]:
        """The counters by field name (the stats line and the shutdown log use these)."""
        return {spec.name: getattr(self, spec.name) for spec in COUNTERS}


@dataclass(frozen=True, slots=True)
class CounterSpec:
    """How one counter is named and explained in each view."""

    name: str
    help: str
    json: str

    @property
    def metric(self) -> str:
        """The Prometheus family name (``_total`` is added by the client library)."""
        return f"broadcaster_{self.name}"


COUNTERS: tuple[CounterSpec, ...] = tuple(
    CounterSpec(spec.name, spec.metadata["help"], spec.metadata["json"])
    for spec in fields(Counters)
)
"""Every counter, in declaration order: what the views iterate over."""
