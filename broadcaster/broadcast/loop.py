"""The broadcast loop: every tick, each channel someone listens to is queried once, encoded
once, and the same frame is published to all its subscribers, on every node of a cluster.

A channel (:class:`~broadcaster.channels.Channel`) is a topic for everyone, or a tenant topic
for one tenant: a tenant topic with subscribers in three tenants is three queries per tick,
each tenant's value published only to its own connections.

Ticks are aligned to the wall clock (:mod:`broadcaster.broadcast.ticks`): tick ``k`` happens at
``k * interval + offset`` since the Unix epoch, so every process agrees on its number
(:attr:`BroadcastLoop.current_tick`). They are scheduled on Trio's clock, mapped from the wall
clock once per tick; a tick that overruns (or a wall clock that jumps ahead) skips the ticks
it missed instead of bunching them up. A topic whose query fails or times out sends
its subscribers an ``influxdb_unavailable`` error and then the last good value again with
``"stale": true``; the next good answer clears it.

One refresh of a channel (:mod:`broadcaster.broadcast.refresh`) is a pipeline through the
:class:`~broadcaster.cluster.broker.Broker`: claim (the lease and the next seq), query,
encode, record, publish; every node (this one too) then delivers the publication to its own
subscribers (:meth:`BroadcastLoop._deliver`, here).

Standalone, the broker is the in-process :class:`~broadcaster.cluster.local.LocalBroker`:
every claim is won and a publication is delivered before ``publish`` returns. In a cluster
(``--redis-url``), one node per channel and tick wins; while Redis is unreachable, each node
claims from its own :class:`LocalBroker` (the fallback: it serves its own subscribers, each
such query counted in ``cluster_fallback_queries``) and goes back to the cluster by itself.

The loop also keeps each channel's latest delivered frame, which is what a new subscriber is
offered at once (:meth:`BroadcastLoop.on_subscribe`, called by the hub); a channel that gets
its first subscriber with no value from the last interval is offered the broker's last value
if that one is fresh, or else refreshed at once (by one node of the cluster: the refresh
lease). A tenant's channel nobody listens to any more is forgotten at the next tick.

A window topic's channel (:mod:`broadcaster.broadcast.window_channel`) runs the same pipeline:
the winner reads the tail, merges it and publishes the append, which every other node merges
into its own copy; its whole window goes to the broker with the last value, and a node whose
window does not follow the numbering (it just started, or missed an append) takes it from
there, or else reads it whole. So a window costs one query per tick for the whole cluster.

``seq`` comes from the broker; ``epoch`` names the numbering (it changes only when ``seq``
restarts). A publication whose (epoch, seq) is not newer than the channel's last is dropped
(a node's own publication echoed back by Redis, or a late one).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping

import structlog
import trio

from broadcaster.broadcast.outcomes import error_description, log_fields
from broadcaster.broadcast.refresh import ChannelRefresher
from broadcaster.broadcast.state import ChannelStates, TopicState
from broadcaster.broadcast.ticks import next_tick, tick_instant, tick_number
from broadcaster.broadcast.topics import Topic
from broadcaster.broadcast.window_channel import WindowChannel
from broadcaster.channels import Channel
from broadcaster.cluster.broker import Broker, Publication
from broadcaster.cluster.local import LocalBroker
from broadcaster.hub import Hub
from broadcaster.sources.base import MetricsSource
from broadcaster.sources.health import SourceHealth
from broadcaster.ws.frames import Frame

log = structlog.get_logger("broadcaster.broadcast.loop")


class BroadcastLoop:
    """Produces each topic's value, publishes it through the broker and remembers the latest.

    Constructing it makes it the hub's subscription listener and the broker's publication
    handler, so it must exist before the first connection subscribes for that subscription
    to trigger a refresh. ``broker``: None for standalone (an in-process broker).
    """

    def __init__(
        self,
        hub: Hub,
        source: MetricsSource,
        topics: Mapping[str, Topic],
        health: SourceHealth,
        *,
        interval_s: float,
        query_timeout_s: float,
        tick_offset_s: float = 0.0,
        wall_clock: Callable[[], float] = time.time,
        after_tick: Callable[[], None] = lambda: None,
        broker: Broker | None = None,
    ) -> None:
        """Tick ``k`` happens when ``wall_clock()`` (Unix seconds) reads ``k * interval_s +
        tick_offset_s``. ``after_tick`` runs once each tick has published (the service collects
        garbage)."""
        self._hub = hub
        self._wall_clock = wall_clock
        self._interval_ms = round(interval_s * 1000)
        self._tick_offset_ms = round(tick_offset_s * 1000)
        self._current_tick: int | None = None
        self._after_tick = after_tick
        self._topics = topics
        self.health = health  # what the loop's queries tell of the source (recorded by each)
        self._interval_s = interval_s
        # Standalone, the in-process broker is both the broker and the "fallback".
        self._fallback = LocalBroker(hub.node_id)
        self._broker: Broker = broker if broker is not None else self._fallback
        self._broker.on_publication = self._fallback.on_publication = self._deliver
        self.states: dict[str, TopicState] = {name: TopicState() for name in topics}
        self.channels = ChannelStates(topics)
        self._refresher = ChannelRefresher(
            hub,
            source,
            topics,
            health,
            broker=self._broker,
            fallback=self._fallback,
            channels=self.channels,
            states=self.states,
            deliver=self._deliver,
            interval_s=interval_s,
            query_timeout_s=query_timeout_s,
        )
        self.ticks = 0
        self._refresh_pending: set[Channel] = set()
        # Unbounded in type only: a pending channel is never requested twice, so it holds at
        # most one request per channel with subscribers (which the connection cap bounds).
        self._refresh_send, self._refresh_requests = trio.open_memory_channel[Channel](math.inf)
        hub.subscription_listener = self

    @property
    def epoch(self) -> str:
        """The numbering this node's updates carry now (its fallback's while Redis is away)."""
        return self._broker.epoch if self._broker.mode == "cluster" else self._fallback.epoch

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Tick forever and answer refresh requests; stops only when cancelled."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._answer_refresh_requests)
            task_status.started()
            await self._tick_forever()

    async def _tick_forever(self) -> None:
        last: int | None = None
        while True:
            k, at = self._schedule_after(last)
            await trio.sleep_until(at)
            self._current_tick = last = k
            await self.tick(k)
            self._after_tick()

    def _schedule_after(self, last: int | None) -> tuple[int, float]:
        """The next tick's number and its Trio time, after tick ``last`` (None: none yet).

        The wall clock is read once, next to Trio's clock, so a wall clock that steps while
        the loop sleeps moves the tick after, not this one. Ticks a slow tick (or a jump
        ahead) left behind are counted as skipped.
        """
        now_ms, now = self._wall_clock() * 1000, trio.current_time()
        k = next_tick(last, now_ms, self._interval_ms, self._tick_offset_ms)
        if last is not None and k > last + 1:
            missed = k - last - 1
            self._hub.counters.ticks_skipped += missed
            log.warning("tick overran its interval", skipped_ticks=missed, next_tick=k)
        elif last is not None and k <= last:
            log.warning(
                "the wall clock went back; tick numbers restart", last_tick=last, next_tick=k
            )
        at_ms = tick_instant(k, self._interval_ms, self._tick_offset_ms)
        return k, now + (at_ms - now_ms) / 1000

    @property
    def current_tick(self) -> int | None:
        """The number ``k`` of the tick running or last run (None before the first): the same
        on every process with the same interval and offset (:func:`~broadcaster.broadcast.
        ticks.tick_number` of its instant)."""
        return self._current_tick

    @property
    def skipped_ticks(self) -> int:
        """Ticks skipped because the one before overran (counted in the hub's counters)."""
        return self._hub.counters.ticks_skipped

    async def tick(self, number: int | None = None) -> None:
        """Refresh every channel with subscribers, concurrently (in a cluster, those whose
        lease this node wins for this tick).

        ``number``: the tick's ``k``, the lease's tick id (the loop passes the tick it
        scheduled, so a late timer still names its own tick); by default the tick the wall
        clock is in.

        A tick that queries something is timed, from its start to the last frame handed to
        the sockets (publishing writes synchronously): ``tick_duration`` of the hub's timings.
        """
        self.ticks += 1
        tick_id = number
        if tick_id is None:
            now_ms = self._wall_clock() * 1000
            tick_id = tick_number(now_ms, self._interval_ms, self._tick_offset_ms)
        channels = self._hub.channels_with_subscribers()
        self._forget_tenant_channels_except(channels)
        if not channels:
            return
        started = trio.current_time()
        async with trio.open_nursery() as nursery:
            for channel in channels:
                nursery.start_soon(self.refresh, channel, tick_id)
        self._hub.timings.tick_duration.observe(trio.current_time() - started)

    def _forget_tenant_channels_except(self, listened: list[Channel]) -> None:
        """Drop the state of tenant channels nobody listens to (none is being refreshed), so
        that it grows with the tenants connected, not with every tenant ever seen."""
        keep = set(listened) | self._refresh_pending
        for channel in [c for c in self.channels if c.tenant is not None and c not in keep]:
            del self.channels[channel]
            self._fallback.forget(channel)

    # --- new subscribers: the latest value, or a refresh ------------------------------------

    def on_subscribe(self, channel: Channel, *, first: bool) -> Frame | None:
        """The frame to offer a new subscriber of ``channel`` at once, or None.

        A refresh in flight will publish to every subscriber, so nothing is offered. A value
        from the last interval is as fresh as a tick's, so it is offered as is: resubscribing
        cannot force queries. Only a channel nobody followed (``first``) with no recent value
        is looked up (the broker's last value, else a query); a followed channel's next tick
        comes within an interval anyway.
        """
        if self._topics[channel.topic].window is not None:
            return self._on_window_subscribe(channel, first=first)
        if channel in self._refresh_pending:
            return None
        state = self.channels.get(channel)
        latest = None if state is None else state.latest
        if latest is not None and (not first or trio.current_time() - latest[1] < self._interval_s):
            return latest[0]
        if first:
            self._request_refresh(channel)
        return None

    def _on_window_subscribe(self, channel: Channel, *, first: bool) -> Frame | None:
        """A window channel offers its whole window from memory whenever it has one (the
        appends that follow continue its ``seq``); a first subscriber with no value from the
        last interval also gets a refresh, which reads the whole window if there is none."""
        state = self.channels.get(channel)
        latest = None if state is None else state.latest
        recent = latest is not None and trio.current_time() - latest[1] < self._interval_s
        if first and not recent and channel not in self._refresh_pending:
            self._request_refresh(channel)
        return self.snapshot(channel)

    def snapshot(self, channel: Channel) -> Frame | None:
        """The channel's value from memory, for a ``snapshot`` request: a window topic's
        whole window, another topic's latest update; None before its first value."""
        state = self.channels.get(channel)
        if state is None:
            return None
        if state.window is None:
            return None if state.latest is None else state.latest[0]
        if state.epoch is None:
            return None
        return state.window.whole_frame(channel.topic, state.seq, epoch=state.epoch)

    def _request_refresh(self, channel: Channel) -> None:
        self._refresh_send.send_nowait(channel)  # never blocks: the buffer is unbounded
        self._refresh_pending.add(channel)

    async def _answer_refresh_requests(self) -> None:
        async with trio.open_nursery() as nursery:
            async for channel in self._refresh_requests:
                nursery.start_soon(self._refresh_requested, channel)

    async def _refresh_requested(self, channel: Channel) -> None:
        try:
            # A window channel looks at the broker's last value itself (under its lock).
            window = self._topics[channel.topic].window is not None
            if window or not await self._refresher.delivered_last_value(channel):
                await self.refresh(channel)
        finally:
            self._refresh_pending.discard(channel)

    async def refresh(self, channel: Channel, tick_id: int | None = None) -> None:
        """Claim ``channel`` for tick ``tick_id`` (None: an immediate refresh); if this node
        wins, query it and publish its value, or the failure (:class:`ChannelRefresher`)."""
        await self._refresher.refresh(channel, tick_id)

    # --- every node: deliver what was published to this node's subscribers -------------------

    def _deliver(self, publication: Publication) -> bool:
        """Hand a publication to this node's subscribers of its channel, unless it is not
        newer than what they got; whether it was delivered. Runs for every publication the
        broker receives, so it never blocks, and a failure stays this channel's."""
        channel = publication.channel
        topic_state = self.states.get(channel.topic)
        if topic_state is None:  # a topic another node's catalog has and ours has not
            return False
        followed = channel.tenant is None or channel in self.channels
        if not followed and not self._hub.has_subscribers(channel):
            return False  # nobody here follows this tenant: keep nothing of it
        state = self.channels.of(channel)
        if publication.epoch == state.epoch and publication.seq <= state.seq:
            return False
        if state.window is not None and not self._absorbed(channel, state.window, publication):
            return False
        state.seq, state.epoch = publication.seq, publication.epoch
        topic_state.seq = max(topic_state.seq, publication.seq)
        try:
            if publication.error is not None:
                description = error_description(publication.error)
                self._hub.offer_error(channel, Frame(publication.error), description)
            if publication.update is not None:
                frame = Frame(publication.update, topic=channel.topic)
                state.latest = (frame, trio.current_time())
                state.last_update = publication.update
                state.as_of_unix_s = publication.as_of_unix_s
                self._hub.publish(channel, frame)
        except Exception:  # a bug in fanning out this channel: contained to it
            topic_state.failures += 1
            log.exception("topic delivery failed", **log_fields(channel))
        return True

    # --- window topics: one window per channel, the same on every node ----------------------

    def _absorbed(self, channel: Channel, window: WindowChannel, publication: Publication) -> bool:
        """Whether the window took ``publication`` (see :meth:`WindowChannel.absorb`); if not,
        its frames are not delivered and the window is taken again from the broker (or read
        whole) at once, so this node's subscribers get the whole window."""
        try:
            if window.absorb(publication):
                return True
        except Exception:  # another node's frame (or our bug) breaks this channel only
            log.exception("window publication could not be merged", **log_fields(channel))
        log.info(
            "window behind the cluster's numbering: taking it again",
            **log_fields(channel),
            seq=publication.seq,
        )
        if channel not in self._refresh_pending:
            self._request_refresh(channel)
        return False
