"""The hub: who is connected, who listens to what, and non-blocking fan-out.

``publish`` hands one pre-encoded frame to every subscriber of a topic with ``send_nowait``;
it never waits on a client. Each new subscription is told to the hub's
:class:`SubscriptionListener` (the broadcast loop, which keeps each topic's latest value): it
answers with a frame to offer the new subscriber at once, or None.

The hub does not build connections: the WebSocket server builds each one from its
``ConnectionPolicy`` and the hub registers it. Nothing outside this module reads the registry:
the heartbeat iterates :meth:`Hub.connections_now`, and the status API, /metrics and the stats
line read one :class:`HubSnapshot`, so they see the same counts.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
import trio

from broadcaster import protocol
from broadcaster.containment import Containment
from broadcaster.counters import Counters
from broadcaster.protocol import CloseCode, ErrorCode
from broadcaster.ws.connection import Connection
from broadcaster.ws.frames import Frame
from broadcaster.ws.outbound import Outbound

log = structlog.get_logger("broadcaster.hub")


@dataclass(frozen=True, slots=True)
class HubSnapshot:
    """The hub's statistics at one moment: what the status API, /metrics and the stats line
    are generated from, so that they agree.

    ``active``: connections open and not closing; ``tracked``: every registered connection,
    closing ones included. ``healthy``: the accept loop runs, the service is not shutting
    down and has room for one more connection.
    """

    counters: dict[str, int]
    active: int
    tracked: int
    healthy: bool
    subscribers: dict[str, int]
    connection_errors: dict[str, int]
    connections: tuple[Connection, ...]


class SubscriptionListener(Protocol):
    """Who hears of new subscriptions: the broadcast loop, owner of the latest values."""

    def on_subscribe(self, topic: str, *, first: bool) -> Frame | None:
        """A connection subscribed to ``topic`` (``first``: nobody else follows it).

        Returns:
            The frame to offer that subscriber at once, or None (a value will come).
        """
        ...


class _NoLatestValues:
    """The listener of a hub with no broadcast loop: nothing to offer, nothing to query."""

    def on_subscribe(self, topic: str, *, first: bool) -> Frame | None:
        return None


class Hub:
    """The connection registry and its subscriptions."""

    def __init__(
        self,
        topics: Sequence[str],
        default_topics: Sequence[str],
        *,
        broadcast_interval_ms: int,
        max_connections: int,
    ) -> None:
        self.topics = list(topics)
        self.default_topics = tuple(default_topics)
        self.broadcast_interval_ms = broadcast_interval_ms
        self.max_connections = max_connections
        # The service-wide counters: shared with every connection (ConnectionPolicy), which
        # counts what it decides; the hub counts connections and publishes.
        self.counters = Counters()
        self.containment = Containment()
        self._connections: dict[str, Connection] = {}
        # Per topic, its subscribers' output paths, which the fan-out loop walks.
        self._subscribers: dict[str, dict[Connection, Outbound]] = {t: {} for t in self.topics}
        # Set by the broadcast loop when it is built; see SubscriptionListener.
        self.subscription_listener: SubscriptionListener = _NoLatestValues()
        self._ids = itertools.count(1)
        self._emptied = trio.Event()
        self._accept_loop_running = False
        self._shutting_down = False
        # Told of every connection the hub forgets, with how many remain (the service logs it).
        self.on_closed: Callable[[Connection, int], None] = lambda connection, remaining: None

    # --- connections ---------------------------------------------------------------------------

    def active_count(self) -> int:
        """Connections open and not closing."""
        return sum(1 for connection in self._connections.values() if connection.closing is None)

    def tracked_count(self) -> int:
        """Every registered connection, closing ones included."""
        return len(self._connections)

    def connections_now(self) -> tuple[Connection, ...]:
        """The registered connections at this moment (a copy: callers may close them)."""
        return tuple(self._connections.values())

    def has_capacity(self) -> bool:
        """Whether one more connection may be accepted."""
        return len(self._connections) < self.max_connections

    def set_accept_loop_running(self, running: bool) -> None:
        """The WebSocket server reports whether its accept loop runs (for /health)."""
        self._accept_loop_running = running

    def healthy(self) -> bool:
        """Whether a new client would be served: accepting, not full, not shutting down."""
        return self._accept_loop_running and not self._shutting_down and self.has_capacity()

    def snapshot(self) -> HubSnapshot:
        """The statistics every view is generated from (see :mod:`broadcaster.counters`)."""
        return HubSnapshot(
            counters=self.counters.as_dict(),
            active=self.active_count(),
            tracked=self.tracked_count(),
            healthy=self.healthy(),
            subscribers=self.subscriber_counts(),
            connection_errors=self.containment.counts(),
            connections=self.connections_now(),
        )

    def refuse(self) -> None:
        """Count a connection refused for capacity or shutdown."""
        self.counters.connections_refused += 1

    def new_connection_id(self) -> str:
        """A unique id for a connection about to be registered."""
        return f"ws_{next(self._ids)}_{int(time.time() * 1000)}"

    def register(self, connection: Connection) -> None:
        """Track a new connection (it counts against the caps from now on).

        It gets nothing yet: :meth:`admit` sends its welcome once it may be served (at once
        without authentication, after a valid token with it).
        """
        self._connections[connection.id] = connection
        self.counters.connections_created += 1
        log.info(
            "connection opened",
            connection_id=connection.id,
            ip=connection.client_info.ip,
            user_agent=connection.client_info.user_agent,
            active=len(self._connections),
        )

    def admit(self, connection: Connection) -> None:
        """Queue a registered connection's welcome and subscribe it to the default topics."""
        connection.offer(
            Frame(
                protocol.welcome(
                    connection.id,
                    self.topics,
                    list(self.default_topics),
                    self.broadcast_interval_ms,
                )
            )
        )
        self._add_subscriptions(connection, self.default_topics)

    def close(self, connection: Connection) -> None:
        """Forget a connection once it has closed, and tell ``on_closed``."""
        if self._connections.pop(connection.id, None) is None:
            return
        for topic in connection.subscriptions:
            self._subscribers[topic].pop(connection, None)
        self.counters.connections_closed += 1
        self.on_closed(connection, len(self._connections))
        if not self._connections:
            self._emptied.set()

    async def wait_until_empty(self) -> None:
        """Return once no connection is left."""
        while self._connections:
            self._emptied = trio.Event()
            await self._emptied.wait()

    def shutdown_all(self, reason: str, reconnect_after_ms: int) -> None:
        """Tell every client the server is going away, then close each with 1001."""
        self._shutting_down = True
        frame = Frame(protocol.server_shutdown(reason, reconnect_after_ms))
        for connection in self.connections_now():
            connection.close(CloseCode.GOING_AWAY, reason, final=frame)

    def abort_all(self, code: CloseCode, reason: str) -> None:
        """Cut every connection now, without a close handshake."""
        for connection in self.connections_now():
            connection.abort(code, reason)

    # --- subscriptions -----------------------------------------------------------------------

    def subscribe(self, connection: Connection, topics: tuple[str, ...]) -> None:
        """Subscribe to the known topics among ``topics``; report unknown ones as an error."""
        known = tuple(t for t in topics if t in self._subscribers)
        self._report_unknown(connection, topics, known)
        if not known:
            return
        fresh = tuple(t for t in known if t not in connection.subscriptions)
        connection.offer(
            Frame(protocol.subscription_confirmed(sorted(connection.subscriptions | set(known))))
        )
        self._add_subscriptions(connection, fresh)

    def unsubscribe(self, connection: Connection, topics: tuple[str, ...]) -> None:
        """Unsubscribe from ``topics``; unknown ones are reported as an error."""
        known = tuple(t for t in topics if t in self._subscribers)
        self._report_unknown(connection, topics, known)
        if not known:
            return
        for topic in known:
            connection.subscriptions.discard(topic)
            self._subscribers[topic].pop(connection, None)
        connection.offer(Frame(protocol.subscription_confirmed(sorted(connection.subscriptions))))

    def _report_unknown(
        self, connection: Connection, topics: tuple[str, ...], known: tuple[str, ...]
    ) -> None:
        """Send one ``invalid_topic`` error, of bounded size, if some ``topics`` are unknown."""
        unknown = [t for t in topics if t not in known]
        if unknown:
            message, fields = protocol.invalid_topic_error(unknown, len(self.topics))
            connection.send_error(ErrorCode.INVALID_TOPIC, message, **fields)

    def _add_subscriptions(self, connection: Connection, topics: Sequence[str]) -> None:
        """Subscribe ``connection`` and offer it what the listener has for each topic at once.

        The listener decides between the latest value and a refresh (see
        :meth:`broadcaster.broadcast.loop.BroadcastLoop.on_subscribe`); the hub only says
        whether the topic had no subscriber before.
        """
        for topic in topics:
            subscribers = self._subscribers[topic]
            first = not subscribers
            subscribers[connection] = connection.outbound
            connection.subscriptions.add(topic)
            frame = self.subscription_listener.on_subscribe(topic, first=first)
            if frame is not None:
                connection.offer(frame)

    # --- fan-out -------------------------------------------------------------------------------

    def topics_with_subscribers(self) -> list[str]:
        """Topics that someone listens to; only these are queried."""
        return [topic for topic, subscribers in self._subscribers.items() if subscribers]

    def subscriber_counts(self) -> dict[str, int]:
        """Number of subscribers per topic."""
        return {topic: len(subscribers) for topic, subscribers in self._subscribers.items()}

    def publish(self, topic: str, frame: Frame) -> int:
        """Hand an update to every subscriber of ``topic`` without waiting; return the takers."""
        assert frame.topic == topic, "publish takes a metrics_update of its topic"
        delivered = Outbound.fan_out(
            self._subscribers[topic].values(), frame, int(time.time() * 1000)
        )
        self.counters.broadcasts += delivered
        return delivered

    def publish_error(self, topic: str, code: ErrorCode, message: str, /, **extra: Any) -> None:
        """Offer one ``error`` frame to a topic's subscribers, counting it against each.

        Like :meth:`Connection.send_error`, but the frame is encoded once for all of them.
        """
        frame = Frame(protocol.error(code, message, **extra))
        description = f"{code.value}: {message}"
        for connection in self._subscribers[topic]:
            if connection.offer(frame):
                connection.note_error(description)
