"""The hub: who is connected, who listens to what, and non-blocking fan-out.

``publish`` hands one pre-encoded frame to every subscriber of a channel with ``send_nowait``;
it never waits on a client. Each new subscription is told to the hub's
:class:`SubscriptionListener` (the broadcast loop, which keeps each channel's latest value): it
answers with a frame to offer the new subscriber at once, or None.

Subscribers are kept per :class:`~broadcaster.channels.Channel`: a topic for everyone, or a
tenant topic for one tenant, so that a tenant's values reach only its connections. What a
connection may subscribe to is decided here, from its identity (None without authentication):
the token's ``topics`` claim, and tenant topics only for an identity with a tenant.

The hub does not build connections: the WebSocket server builds each one from its
``ConnectionPolicy`` and the hub registers it. Nothing outside this module reads the registry:
the heartbeat iterates :meth:`Hub.connections_now`, and the status API, /metrics and the stats
line read one :class:`HubSnapshot`, so they see the same counts.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
import trio

from broadcaster import protocol
from broadcaster.auth.identity import Identity
from broadcaster.channels import Channel
from broadcaster.containment import Containment
from broadcaster.counters import Counters
from broadcaster.protocol import CloseCode, ErrorCode
from broadcaster.timings import Timings
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
    down and has room for one more connection. ``started_at_unix_ms`` and ``uptime_s``: when
    the service started (the hub is built as it starts) and for how long it has run.
    """

    counters: dict[str, int]
    active: int
    tracked: int
    healthy: bool
    subscribers: dict[str, int]
    connection_errors: dict[str, int]
    connections: tuple[Connection, ...]
    started_at_unix_ms: float
    uptime_s: float


class SubscriptionListener(Protocol):
    """Who hears of new subscriptions: the broadcast loop, owner of the latest values."""

    def on_subscribe(self, channel: Channel, *, first: bool) -> Frame | None:
        """A connection subscribed to ``channel`` (``first``: nobody else follows it).

        Returns:
            The frame to offer that subscriber at once, or None (a value will come).
        """
        ...

    def snapshot(self, channel: Channel) -> Frame | None:
        """The channel's current value from memory (a window topic's whole window), or None
        before its first value. Never queries."""
        ...


class _NoLatestValues:
    """The listener of a hub with no broadcast loop: nothing to offer, nothing to query."""

    def on_subscribe(self, channel: Channel, *, first: bool) -> Frame | None:
        return None

    def snapshot(self, channel: Channel) -> Frame | None:
        return None


class Hub:
    """The connection registry and its subscriptions.

    ``tenant_topics``: the topics among ``topics`` whose values depend on the tenant.
    """

    def __init__(
        self,
        topics: Sequence[str],
        default_topics: Sequence[str],
        *,
        broadcast_interval_ms: int,
        max_connections: int,
        tenant_topics: Collection[str] = (),
        max_connections_per_ip: int = 0,
        max_connections_per_identity: int = 0,
        cluster: str | None = None,
        node_id: str = "standalone",
    ) -> None:
        self.topics = list(topics)
        # What ``welcome`` says of where the connection is served (``--cluster-name`` with
        # ``--redis-url``, else None; ``--node-id``).
        self.cluster = cluster
        self.node_id = node_id
        self.default_topics = tuple(default_topics)
        self.tenant_topics = frozenset(tenant_topics)
        self._known_topics = frozenset(self.topics)
        self.broadcast_interval_ms = broadcast_interval_ms
        self.max_connections = max_connections
        self.max_connections_per_ip = max_connections_per_ip  # 0: unlimited
        self.max_connections_per_identity = max_connections_per_identity  # 0: unlimited
        # The service-wide counters: shared with every connection (ConnectionPolicy), which
        # counts what it decides; the hub counts connections and publishes.
        self.counters = Counters()
        # The service-wide durations (connections, ticks, queries): same sharing as counters.
        self.timings = Timings()
        self.containment = Containment()
        # The one record of when the service started: wall clock to show, monotonic to count.
        self.started_at_unix_ms = time.time() * 1000
        self._started_monotonic = time.monotonic()
        # Checked once: at info level, a subscription change builds no log fields.
        self._log_subscriptions = log.is_enabled_for(logging.DEBUG)
        self._connections: dict[str, Connection] = {}
        # Registered connections per client address, and per identity (sub, tenant) oldest
        # first: what the per-address and per-identity caps count.
        self._per_address: dict[str, int] = {}
        self._per_identity: dict[tuple[str, str | None], dict[Connection, None]] = {}
        # Per channel, its subscribers' output paths, which the fan-out loop walks. A topic
        # for everyone has its channel from the start; a tenant's channel lives while it has
        # subscribers (so the map grows with tenants connected, not with tenants ever seen).
        self._subscribers: dict[Channel, dict[Connection, Outbound]] = {
            Channel(t, None): {} for t in self.topics if t not in self.tenant_topics
        }
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

    def has_room_for_address(self, ip: str | None) -> bool:
        """Whether ``ip`` may open one more connection (``--max-connections-per-ip``)."""
        cap = self.max_connections_per_ip
        return not cap or ip is None or self._per_address.get(ip, 0) < cap

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
            started_at_unix_ms=self.started_at_unix_ms,
            uptime_s=round(time.monotonic() - self._started_monotonic, 3),
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
        if (ip := connection.client_info.ip) is not None:
            self._per_address[ip] = self._per_address.get(ip, 0) + 1
        self.counters.connections_created += 1
        log.info(
            "connection opened",
            connection_id=connection.id,
            ip=connection.client_info.ip,
            user_agent=connection.client_info.user_agent,
            active=len(self._connections),
        )

    def identify(self, connection: Connection, identity: Identity) -> None:
        """Record who holds ``connection`` (a valid token) and apply the per-identity cap:
        over ``--max-connections-per-identity`` open connections of the same ``sub`` and
        ``tenant``, the oldest is closed with 4009."""
        connection.identity = identity
        held = self._per_identity.setdefault((identity.sub, identity.tenant), {})
        held[connection] = None
        cap = self.max_connections_per_identity
        if not cap:
            return
        open_ones = [c for c in held if c.closing is None]
        for oldest in open_ones[: max(0, len(open_ones) - cap)]:
            oldest.close(CloseCode.REPLACED, "replaced by a newer connection")
            self.counters.connections_replaced += 1
            log.info("connection replaced", connection_id=oldest.id, by=connection.id)

    def admit(self, connection: Connection) -> None:
        """Queue a registered connection's welcome and subscribe it to the default topics.

        Both list only what the connection may subscribe to (see :meth:`allowed_topics`); with
        an identity, the welcome also says who it is and when its token expires.
        """
        identity = connection.identity
        defaults = self.allowed_topics(connection, self.default_topics)
        connection.offer(
            Frame(
                protocol.welcome(
                    connection.id,
                    self.allowed_topics(connection, self.topics),
                    defaults,
                    self.broadcast_interval_ms,
                    cluster=self.cluster,
                    node_id=self.node_id,
                    identity=None
                    if identity is None
                    else protocol.WelcomeIdentity(
                        identity.sub, identity.tenant, identity.expires_at_unix_s
                    ),
                )
            )
        )
        self._add_subscriptions(connection, defaults)

    def close(self, connection: Connection) -> None:
        """Forget a connection once it has closed, and tell ``on_closed``."""
        if self._connections.pop(connection.id, None) is None:
            return
        self._forget_holder(connection)
        self._leave_channels(connection, connection.subscriptions)
        self.counters.connections_closed += 1
        self.timings.connection_duration.observe(connection.age_s())
        self.on_closed(connection, len(self._connections))
        if not self._connections:
            self._emptied.set()

    def _forget_holder(self, connection: Connection) -> None:
        """Take a closed connection out of the per-address and per-identity counts."""
        if (ip := connection.client_info.ip) is not None:
            left = self._per_address.pop(ip, 0) - 1
            if left > 0:
                self._per_address[ip] = left
        if (identity := connection.identity) is not None:
            key = (identity.sub, identity.tenant)
            held = self._per_identity.get(key, {})
            held.pop(connection, None)
            if not held:
                self._per_identity.pop(key, None)

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

    def allowed_topics(self, connection: Connection, topics: Sequence[str]) -> list[str]:
        """The topics among ``topics`` that ``connection`` may subscribe to, in order.

        Without an identity (``--auth-mode none``) there is no tenant, so every topic but the
        tenant topics; with one, what its ``topics`` claim allows, tenant topics only if it
        has a tenant.
        """
        identity = connection.identity
        if identity is None:
            return [t for t in topics if t not in self.tenant_topics]
        return identity.allowed(topics, self.tenant_topics)

    def subscribe(self, connection: Connection, topics: tuple[str, ...]) -> None:
        """Subscribe to the known, allowed topics among ``topics``.

        Unknown topics are reported as one ``invalid_topic`` error, known but forbidden ones
        as one ``forbidden_topic`` error; the allowed ones in the same request still apply.
        """
        known = tuple(t for t in topics if t in self._known_topics)
        self._report_unknown(connection, topics, known)
        allowed = tuple(self.allowed_topics(connection, known))
        self._report_forbidden(connection, known, allowed)
        if not allowed:
            return
        fresh = tuple(t for t in allowed if t not in connection.subscriptions)
        connection.offer(
            Frame(protocol.subscription_confirmed(sorted(connection.subscriptions | set(allowed))))
        )
        self._add_subscriptions(connection, fresh)

    def unsubscribe(self, connection: Connection, topics: tuple[str, ...]) -> None:
        """Unsubscribe from ``topics``; unknown ones are reported as an error."""
        known = tuple(t for t in topics if t in self._known_topics)
        self._report_unknown(connection, topics, known)
        if not known:
            return
        left = [t for t in known if t in connection.subscriptions]
        self._leave_channels(connection, left)
        connection.subscriptions.difference_update(known)
        if self._log_subscriptions and left:
            log.debug("unsubscribed", connection_id=connection.id, removed=left)
        connection.offer(Frame(protocol.subscription_confirmed(sorted(connection.subscriptions))))

    def send_snapshot(self, connection: Connection, topic: str) -> None:
        """Offer ``topic``'s value again, from memory: a ``snapshot`` request, which a client
        sends when it saw a gap in a window topic's ``seq``. Nothing is offered before the
        first value (it will come); a topic not subscribed to is an error.

        At most one answer per topic per broadcast interval and connection; more requests
        are ignored. A whole window is large (about 100 KB for the 1-hour chart) and a
        request small: without the limit, each allowed message would make the server send
        2 000 times its size. A client that follows the gap rule asks at most once a tick.
        """
        if topic not in self._known_topics:
            self._report_unknown(connection, (topic,), ())
            return
        if topic not in connection.subscriptions:
            message, fields = protocol.not_subscribed_error(topic)
            connection.send_error(ErrorCode.NOT_SUBSCRIBED, message, **fields)
            return
        now = trio.current_time()
        last = connection.snapshots_sent.get(topic)
        if last is not None and now - last < self.broadcast_interval_ms / 1000:
            return
        frame = self.subscription_listener.snapshot(self.channel_of(connection, topic))
        if frame is not None:
            connection.snapshots_sent[topic] = now
            connection.offer(frame)

    def _report_unknown(
        self, connection: Connection, topics: tuple[str, ...], known: tuple[str, ...]
    ) -> None:
        """Send one ``invalid_topic`` error, of bounded size, if some ``topics`` are unknown."""
        unknown = [t for t in topics if t not in known]
        if unknown:
            message, fields = protocol.invalid_topic_error(unknown, len(self.topics))
            connection.send_error(ErrorCode.INVALID_TOPIC, message, **fields)

    def _report_forbidden(
        self, connection: Connection, known: tuple[str, ...], allowed: tuple[str, ...]
    ) -> None:
        """Send one ``forbidden_topic`` error, of bounded size, if some ``known`` are not
        ``allowed``, and count the refused request."""
        forbidden = [t for t in known if t not in allowed]
        if forbidden:
            self.counters.forbidden_subscriptions += 1
            message, fields = protocol.forbidden_topic_error(forbidden)
            connection.send_error(ErrorCode.FORBIDDEN_TOPIC, message, **fields)

    def channel_of(self, connection: Connection, topic: str) -> Channel:
        """The channel through which ``connection`` gets ``topic``: its tenant's, for a tenant
        topic (only allowed with a tenant), else the topic's one channel."""
        if topic in self.tenant_topics:
            tenant = None if connection.identity is None else connection.identity.tenant
            assert tenant is not None, "a tenant topic is subscribed only with a tenant"
            return Channel(topic, tenant)
        return Channel(topic, None)

    def _add_subscriptions(self, connection: Connection, topics: Sequence[str]) -> None:
        """Subscribe ``connection`` and offer it what the listener has for each topic at once.

        ``topics`` must be allowed (:meth:`allowed_topics`). The listener decides between the
        latest value and a refresh (see
        :meth:`broadcaster.broadcast.loop.BroadcastLoop.on_subscribe`); the hub only says
        whether the channel had no subscriber before.
        """
        for topic in topics:
            channel = self.channel_of(connection, topic)
            subscribers = self._subscribers.setdefault(channel, {})
            first = not subscribers
            subscribers[connection] = connection.outbound
            connection.subscriptions.add(topic)
            frame = self.subscription_listener.on_subscribe(channel, first=first)
            if frame is not None:
                connection.offer(frame)
        if self._log_subscriptions and topics:
            log.debug("subscribed", connection_id=connection.id, added=list(topics))

    def _leave_channels(self, connection: Connection, topics: Collection[str]) -> None:
        """Take ``connection`` out of the channels of ``topics``, which it is subscribed to
        (its own set of subscriptions is left as is); a tenant's channel left empty goes."""
        for topic in topics:
            channel = self.channel_of(connection, topic)
            subscribers = self._subscribers.get(channel)
            if subscribers is None:
                continue
            subscribers.pop(connection, None)
            if not subscribers and channel.tenant is not None:
                del self._subscribers[channel]

    # --- fan-out -------------------------------------------------------------------------------

    def has_subscribers(self, channel: Channel) -> bool:
        """Whether someone here listens to ``channel``."""
        return bool(self._subscribers.get(channel))

    def channels_with_subscribers(self) -> list[Channel]:
        """Channels that someone listens to; only these are queried."""
        return [channel for channel, subscribers in self._subscribers.items() if subscribers]

    def subscriber_counts(self) -> dict[str, int]:
        """Number of subscribers per topic (summed over its tenants' channels)."""
        counts = dict.fromkeys(self.topics, 0)
        for channel, subscribers in self._subscribers.items():
            counts[channel.topic] += len(subscribers)
        return counts

    def publish(self, channel: Channel, frame: Frame) -> int:
        """Hand an update to every subscriber of ``channel`` without waiting; return the takers."""
        assert frame.topic == channel.topic, "publish takes a metrics_update of its topic"
        subscribers = self._subscribers.get(channel)
        if not subscribers:
            return 0
        delivered = Outbound.fan_out(subscribers.values(), frame, int(time.time() * 1000))
        self.counters.broadcasts += delivered
        return delivered

    def publish_error(
        self, channel: Channel, code: ErrorCode, message: str, /, **extra: Any
    ) -> None:
        """Offer one ``error`` frame to a channel's subscribers, counting it against each.

        Like :meth:`Connection.send_error`, but the frame is encoded once for all of them.
        """
        frame = Frame(protocol.error(code, message, **extra))
        self.offer_error(channel, frame, f"{code.value}: {message}")

    def offer_error(self, channel: Channel, frame: Frame, description: str) -> None:
        """Offer an encoded ``error`` frame (``description``: its ``code: message``) to a
        channel's subscribers, counting it against each."""
        subscribers = self._subscribers.get(channel)
        if not subscribers:
            return
        for connection in subscribers:
            if connection.offer(frame):
                connection.note_error(description)
