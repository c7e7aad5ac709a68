"""The hub: who is connected, who listens to what, and non-blocking fan-out.

``publish`` hands one pre-encoded frame to every subscriber of a topic with ``send_nowait``;
it never waits on a client. Each new subscription is told to the hub's
:class:`SubscriptionListener` (the broadcast loop, which keeps each topic's latest value): it
answers with a frame to offer the new subscriber at once, or None.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import structlog
import trio

from broadcaster import protocol
from broadcaster.containment import Containment
from broadcaster.protocol import CloseCode, ErrorCode
from broadcaster.ws.connection import ClientInfo, Connection, InputLimits, OutputLimits
from broadcaster.ws.frames import Frame
from broadcaster.ws.outbound import Outbound, fan_out

log = structlog.get_logger("broadcaster.hub")


@dataclass
class Totals:
    """Counters since the service started."""

    connections_created: int = 0
    connections_closed: int = 0
    connections_refused: int = 0
    broadcasts: int = 0
    errors: int = 0
    slow_consumers_closed: int = 0
    replaced_updates: int = 0
    heartbeat_timeouts: int = 0
    oversized_messages: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counters by name."""
        return asdict(self)


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
        output_limits: OutputLimits,
        input_limits: InputLimits,
    ) -> None:
        self.topics = list(topics)
        self.default_topics = tuple(default_topics)
        self.broadcast_interval_ms = broadcast_interval_ms
        self.max_connections = max_connections
        self.output_limits = output_limits
        self.input_limits = input_limits
        self.connections: dict[str, Connection] = {}
        self.totals = Totals()
        self.containment = Containment()
        # Per topic, its subscribers' output paths, which the fan-out loop walks.
        self._subscribers: dict[str, dict[Connection, Outbound]] = {t: {} for t in self.topics}
        # Set by the broadcast loop when it is built; see SubscriptionListener.
        self.subscription_listener: SubscriptionListener = _NoLatestValues()
        self._ids = itertools.count(1)
        self._emptied = trio.Event()

    # --- connections ---------------------------------------------------------------------------

    def active_count(self) -> int:
        """Connections open and not closing (``connections`` also holds closing ones)."""
        return sum(1 for connection in self.connections.values() if connection.close_code is None)

    def has_capacity(self) -> bool:
        """Whether one more connection may be accepted."""
        return len(self.connections) < self.max_connections

    def refuse(self) -> None:
        """Count a connection refused for capacity or shutdown."""
        self.totals.connections_refused += 1

    def open(self, client_info: ClientInfo) -> Connection:
        """Register a new connection, queue its welcome and subscribe it to the defaults."""
        connection = Connection(
            id=f"ws_{next(self._ids)}_{int(time.time() * 1000)}",
            client_info=client_info,
            limits=self.output_limits,
            input_limits=self.input_limits,
            containment=self.containment,
        )
        connection.on_slow = self._count_slow
        connection.on_error = self._count_error
        connection.on_replaced = self._count_replaced
        self.connections[connection.id] = connection
        self.totals.connections_created += 1
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
        log.info(
            "connection opened",
            connection_id=connection.id,
            ip=client_info.ip,
            user_agent=client_info.user_agent,
            active=len(self.connections),
        )
        return connection

    def close(self, connection: Connection) -> None:
        """Forget a connection once it has closed, and log its summary."""
        if self.connections.pop(connection.id, None) is None:
            return
        for topic in connection.subscriptions:
            self._subscribers[topic].pop(connection, None)
        self.totals.connections_closed += 1
        if connection.close_code == CloseCode.MESSAGE_TOO_BIG:
            self.totals.oversized_messages += 1
        log.info(
            "connection closed",
            code=connection.close_code,
            reason=connection.close_reason,
            closed_by=connection.closed_by,
            remaining=len(self.connections),
            **{k: v for k, v in connection.summary().items() if k != "id"},
            connection_id=connection.id,
        )
        if not self.connections:
            self._emptied.set()

    async def wait_until_empty(self) -> None:
        """Return once no connection is left."""
        while self.connections:
            self._emptied = trio.Event()
            await self._emptied.wait()

    def shutdown_all(self, reason: str, reconnect_after_ms: int) -> None:
        """Tell every client the server is going away, then close each with 1001."""
        frame = Frame(protocol.server_shutdown(reason, reconnect_after_ms))
        for connection in list(self.connections.values()):
            connection.replace_pending_and_close(frame, CloseCode.GOING_AWAY, reason)

    def abort_all(self, code: CloseCode, reason: str) -> None:
        """Cut every connection now, without a close handshake."""
        for connection in list(self.connections.values()):
            connection.abort(code, reason)

    def _count_error(self, connection: Connection) -> None:
        self.totals.errors += 1

    def _count_replaced(self, connection: Connection) -> None:
        self.totals.replaced_updates += 1

    def _count_slow(self, connection: Connection) -> None:
        self.totals.slow_consumers_closed += 1
        log.warning(
            "slow consumer closed",
            connection_id=connection.id,
            reason=connection.close_reason,
            code=int(CloseCode.SLOW_CONSUMER),
        )

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
        delivered = fan_out(self._subscribers[topic].values(), frame, int(time.time() * 1000))
        self.totals.broadcasts += delivered
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
