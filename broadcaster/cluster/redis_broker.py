"""The Redis broker (``--redis-url``): processes sharing one Redis and a cluster name are one
cluster, with one query per channel per tick between them.

coredis (on AnyIO, so Trio-native) talks to Redis. The atomic steps are Lua scripts
(:mod:`broadcaster.cluster.redis_scripts`); leases and a last value's age use Redis's clock.
Every publication of the cluster goes through one pub/sub channel, which each node listens
to: a node learns every channel's latest value as it is published (so a new subscriber gets
it at once), and keeps only those its own subscribers follow.

:meth:`RedisBroker.run` owns the connection pool and the subscription. While it is
subscribed the mode is ``cluster``; when the connection is lost it is ``local`` (claims
raise :class:`BrokerUnavailable` at once, so the loop serves its own subscribers) and it
reconnects with an exponential backoff with jitter (so the nodes of a cluster do not all
come back in the same instant), back to ``cluster`` by itself::

    connect + SUBSCRIBE ──ok──► cluster ──connection lost──► local ──wait(backoff)──┐
          ▲                                                                        │
          └────────────────────────────────────────────────────────────────────────┘
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import anyio
import coredis
import orjson
import structlog
import trio
from coredis.exceptions import RedisError
from coredis.retry import NoRetryPolicy

from broadcaster.channels import Channel
from broadcaster.client.backoff import ReconnectPolicy, reconnect_wait_s
from broadcaster.cluster import envelope, redis_scripts
from broadcaster.cluster.broker import (
    BrokerMode,
    BrokerUnavailable,
    Claim,
    LastValue,
    Publication,
    PublicationHandler,
)
from broadcaster.cluster.local import new_epoch
from broadcaster.protocol import iso_from_unix_ms

log = structlog.get_logger("broadcaster.cluster.redis")

RECONNECT = ReconnectPolicy(base_delay_s=0.2, max_delay_s=5.0, jitter_ratio=0.5)
"""Waits between attempts to reach Redis again: 0.2 s doubling to 5 s, plus up to half."""
COMMAND_TIMEOUT_S = 1.0
"""How long one Redis command or connection attempt may take."""
IDLE_PING_S = 2.0
"""A subscription silent this long is checked with a PING (a hung Redis is found in ~3 s)."""


_CONNECTION_ENDED = (RedisError, OSError, anyio.ClosedResourceError, anyio.BrokenResourceError)
"""How the subscription ends when Redis goes away. coredis closes a connection's streams when
it is lost or cancelled; unsubscribing then (its cleanup, also at shutdown) raises
``ClosedResourceError``: the connection is gone either way."""


def channel_key(channel: Channel) -> str:
    """A channel's part of its Redis keys: unambiguous whatever the topic and tenant hold."""
    return orjson.dumps([channel.topic, channel.tenant]).decode()


class RedisKeys:
    """The cluster's key names (drawn in :mod:`broadcaster.cluster.redis_scripts`)."""

    def __init__(self, cluster: str) -> None:
        self.prefix = cluster
        self.epoch = f"{cluster}:epoch"
        self.updates = f"{cluster}:updates"
        self.nodes = f"{cluster}:nodes"

    def seq(self, channel: Channel) -> str:
        return f"{self.prefix}:seq:{channel_key(channel)}"

    def topic_seq(self, topic: str) -> str:
        return f"{self.prefix}:topicseq:{topic}"

    def lease(self, channel: Channel, tick_id: int | None) -> str:
        if tick_id is None:
            return f"{self.prefix}:refresh:{channel_key(channel)}"
        return f"{self.prefix}:lease:{channel_key(channel)}:{tick_id}"

    def last(self, channel: Channel) -> str:
        return f"{self.prefix}:last:{channel_key(channel)}"

    def node(self, node_id: str) -> str:
        return f"{self.prefix}:node:{node_id}"


class RedisBroker:
    """The cluster's broker on Redis; see the module docstring.

    ``interval_s`` sizes the leases (a tick's lease outlives the tick; a refresh lease is one
    interval) and the last value's TTL (a few intervals: older is never offered anyway).
    """

    def __init__(self, url: str, *, cluster: str, node_id: str, interval_s: float) -> None:
        self.cluster: str | None = cluster
        self.node_id = node_id
        self.epoch = ""  # learnt from the first claim or publication
        self.on_publication: PublicationHandler = _ignore
        # Told when the link is made (None) or lost or not made again (why): notifications.
        self.on_link: Callable[[str | None], None] = lambda error: None
        self.keys = RedisKeys(cluster)
        self.last_error: str | None = None
        self._interval_ms = max(1, round(interval_s * 1000))
        self._subscribed = False
        self._rng = random.Random()
        self.client: coredis.Redis[bytes] = coredis.Redis.from_url(
            url,
            stream_timeout=COMMAND_TIMEOUT_S,
            connect_timeout=COMMAND_TIMEOUT_S,
            retry_policy=NoRetryPolicy(),
        )
        self._claim = self.client.register_script(redis_scripts.CLAIM)
        self._publish = self.client.register_script(redis_scripts.PUBLISH)
        self._last_value = self.client.register_script(redis_scripts.LAST_VALUE)

    @property
    def mode(self) -> BrokerMode:
        """``cluster`` while subscribed to the cluster's channel, else ``local``."""
        return "cluster" if self._subscribed else "local"

    @property
    def healthy(self) -> bool:
        """Whether Redis is reachable (the same as the ``cluster`` mode)."""
        return self._subscribed

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the connection pool and listen to the cluster's channel, reconnecting with
        backoff, until cancelled. Reports started at once: Redis may be down at start."""
        async with self.client:
            task_status.started()
            attempt = 0
            while True:
                ended: BaseException | None = None
                try:
                    await self._listen()
                except* _CONNECTION_ENDED as group:
                    ended = group.exceptions[0]
                # Cancelled, its connection closing can end the subscription: no loss to report
                # (the Cancelled that came with it, if any, has propagated by now).
                await trio.lowlevel.checkpoint_if_cancelled()
                was_connected = self._lost(ended)
                # A connection that worked starts the schedule again from its first delay.
                attempt = 1 if was_connected else attempt + 1
                await trio.sleep(reconnect_wait_s(RECONNECT, attempt, self._rng))

    async def _listen(self) -> None:
        pubsub = self.client.pubsub(
            channels=[self.keys.updates],
            retry_policy=None,
            ignore_subscribe_messages=True,
            subscription_timeout=COMMAND_TIMEOUT_S,
            max_idle_seconds=IDLE_PING_S,
        )
        async with pubsub:
            self._subscribed = True
            log.info("redis connected: cluster mode", cluster=self.cluster, node_id=self.node_id)
            self.last_error = None
            self.on_link(None)
            async for message in pubsub:
                if message["type"] == "message":
                    self._receive(message["data"])

    def _lost(self, error: BaseException | None) -> bool:
        """Record the end of the subscription; whether it had been established."""
        was = self._subscribed
        self._subscribed = False
        self.last_error = "subscription ended" if error is None else _describe(error)
        if was:
            log.warning("redis lost: local mode", error=self.last_error)
        self.on_link(self.last_error)
        return was

    def _receive(self, data: Any) -> None:
        try:
            publication = envelope.decode(bytes(data))
        except envelope.BadEnvelope as exc:
            log.warning("unreadable message on the cluster channel", error=str(exc))
            return
        self.epoch = publication.epoch
        self.on_publication(publication)

    def _unavailable(self, exc: BaseException) -> BrokerUnavailable:
        self.last_error = _describe(exc)
        return BrokerUnavailable(self.last_error)

    def _require_cluster(self) -> None:
        if not self._subscribed:
            raise BrokerUnavailable(self.last_error or "not connected to Redis")

    async def claim(self, channel: Channel, tick_id: int | None) -> Claim | None:
        """The lease of ``channel`` for ``tick_id`` (None: the refresh lease, one interval)
        and the next seq, in one script; None if another node holds it."""
        self._require_cluster()
        lease_ms = self._interval_ms if tick_id is None else 2 * self._interval_ms
        keys = [
            self.keys.lease(channel, tick_id),
            self.keys.seq(channel),
            self.keys.topic_seq(channel.topic),
            self.keys.epoch,
        ]
        try:
            won: Any = await self._claim(keys=keys, args=[self.node_id, lease_ms, new_epoch()])
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc) from exc
        if won is None:
            return None
        seq, epoch = won
        self.epoch = _text(epoch)
        return Claim(int(seq), self.epoch)

    async def publish(self, publication: Publication) -> bool:
        """Store (if it has an update) and publish, fenced on seq and epoch; deliver it here
        at once if it went out (its echo from Redis is then dropped as not newer)."""
        sent = envelope.encode(publication)
        kept = sent if publication.whole is None else envelope.encode(publication, whole=True)
        keys = [self.keys.last(publication.channel), self.keys.epoch]
        args: list[str | bytes | int] = [
            publication.seq,
            publication.epoch,
            kept,
            4 * self._interval_ms,
            1 if publication.update is not None else 0,
            self.keys.updates,
            sent,
        ]
        try:
            accepted = bool(await self._publish(keys=keys, args=args))
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc) from exc
        if accepted:
            self.on_publication(publication)
        else:
            log.info("publication fenced: a newer one was published", seq=publication.seq)
        return accepted

    async def last_value(self, channel: Channel) -> LastValue | None:
        """The channel's last publication with a value and its age by Redis's clock."""
        self._require_cluster()
        try:
            found: Any = await self._last_value(keys=[self.keys.last(channel)], args=[])
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc) from exc
        if found is None:
            return None
        age_ms, message = found
        try:
            publication = envelope.decode(bytes(message))
        except envelope.BadEnvelope:
            return None
        return LastValue(publication, int(age_ms) / 1000)

    # --- node presence ----------------------------------------------------------------------

    async def register(self, presence: dict[str, Any], ttl_s: float) -> None:
        """Say this node is alive, with what it serves, for ``ttl_s``."""
        body = orjson.dumps({**presence, "lastSeen": iso_from_unix_ms(time.time() * 1000)})
        try:
            await self.client.set(self.keys.node(self.node_id), body, px=round(ttl_s * 1000))
            await self.client.sadd(self.keys.nodes, [self.node_id])
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc) from exc

    async def deregister(self) -> None:
        """Leave the cluster's view at once (graceful shutdown)."""
        try:
            await self.client.delete([self.keys.node(self.node_id)])
            await self.client.srem(self.keys.nodes, [self.node_id])
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc) from exc

    async def live_nodes(self) -> list[dict[str, Any]]:
        """The presence of every node whose registration has not expired, by id; forgets
        the expired ones."""
        try:
            ids = sorted(_text(i) for i in await self.client.smembers(self.keys.nodes))
            bodies = await self.client.mget([self.keys.node(i) for i in ids]) if ids else []
            gone = [i for i, body in zip(ids, bodies, strict=True) if body is None]
            if gone:
                await self.client.srem(self.keys.nodes, gone)
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc) from exc
        return [orjson.loads(body) for body in bodies if body is not None]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _describe(error: BaseException) -> str:
    return str(error) or type(error).__name__


def _ignore(publication: Publication) -> None:
    """The handler until the loop sets its own."""
