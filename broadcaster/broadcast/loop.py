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

One refresh of a channel is a pipeline through the :class:`~broadcaster.cluster.broker.Broker`::

    claim   -> the lease and the next seq (another node won: stop here, it publishes)
    query (+ shape) -> outcome: Value | Failure(cause, text)
    encode  -> outcome: Update (the frame) | Failure
    record  -> topic state, source health, the log
    publish -> through the broker, fenced on seq; every node (this one too) delivers it
    deliver -> the error and/or the frame, through the hub, to this node's subscribers

Standalone, the broker is the in-process :class:`~broadcaster.cluster.local.LocalBroker`:
every claim is won and a publication is delivered before ``publish`` returns. In a cluster
(``--redis-url``), one node per channel and tick wins; while Redis is unreachable, each node
claims from its own :class:`LocalBroker` (the fallback: it serves its own subscribers, each
such query counted in ``cluster_fallback_queries``) and goes back to the cluster by itself.

Whatever a channel's data makes go wrong ends as that channel's failure, never the loop's
nor another channel's.

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

from broadcaster import protocol
from broadcaster.broadcast.outcomes import (
    Failure,
    Update,
    Value,
    as_of_unix_s,
    cause_of,
    error_description,
    internal_failure,
    log_fields,
    stale_copy,
)
from broadcaster.broadcast.state import ChannelState, TopicState
from broadcaster.broadcast.ticks import next_tick, tick_instant, tick_number
from broadcaster.broadcast.topics import Topic
from broadcaster.broadcast.window_channel import WindowChannel, encode_window, window_publication
from broadcaster.channels import Channel
from broadcaster.cluster.broker import Broker, BrokerUnavailable, Claim, Publication
from broadcaster.cluster.local import LocalBroker
from broadcaster.errors import SourceError, SourceResponseError
from broadcaster.hub import Hub
from broadcaster.protocol import ErrorCode, FailureCause
from broadcaster.sources.base import MetricsSource
from broadcaster.sources.health import SourceHealth
from broadcaster.ws.frames import Frame

log = structlog.get_logger("broadcaster.broadcast.loop")

BROKER_TIMEOUT_S = 1.0
"""The longest one broker call (claim, publish, last value) may take before the loop serves
its own subscribers alone: well under a tick, so a hung Redis costs no tick."""


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
        self._source = source
        self._topics = topics
        self._health = health
        self._interval_s = interval_s
        self._query_timeout_s = query_timeout_s
        # Standalone, the in-process broker is both the broker and the "fallback".
        self._fallback = LocalBroker(hub.node_id)
        self._broker: Broker = broker if broker is not None else self._fallback
        self._clustered = broker is not None
        self._broker.on_publication = self._fallback.on_publication = self._deliver
        self.states: dict[str, TopicState] = {name: TopicState() for name in topics}
        self.channels: dict[Channel, ChannelState] = {}
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

    def _channel_state(self, channel: Channel) -> ChannelState:
        state = self.channels.get(channel)
        if state is None:
            spec = self._topics[channel.topic].window
            window = None if spec is None else WindowChannel(spec)
            state = self.channels[channel] = ChannelState(window=window)
        return state

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
            if window or not await self._delivered_last_value(channel):
                await self.refresh(channel)
        finally:
            self._refresh_pending.discard(channel)

    async def _delivered_last_value(self, channel: Channel) -> bool:
        """In a cluster, deliver the broker's last value of ``channel`` if it is from the
        last interval (no query needed); whether it was."""
        if not self._clustered or self._broker.mode != "cluster":
            return False
        try:
            with trio.fail_after(BROKER_TIMEOUT_S):
                last = await self._broker.last_value(channel)
        except (BrokerUnavailable, trio.TooSlowError):
            return False
        if last is None or last.age_s >= self._interval_s or last.publication.update is None:
            return False
        return self._deliver(last.publication)

    # --- one refresh: claim -> query -> outcome -> record -> publish --------------------------

    async def refresh(self, channel: Channel, tick_id: int | None = None) -> None:
        """Claim ``channel`` for tick ``tick_id`` (None: an immediate refresh); if this node
        wins, query it under the timeout and publish its value, or the failure.

        Whatever goes wrong here ends this channel's refresh, never the loop or another
        channel: a failure is reported to the channel's subscribers and the loop goes on. A
        claim (in a cluster) is finished even while the service stops, within the query and
        broker timeouts, so that a node leaving the cluster costs the others no tick.
        """
        async with self._channel_state(channel).refreshing:
            await self._claim_and_refresh(channel, tick_id)

    async def _claim_and_refresh(self, channel: Channel, tick_id: int | None) -> None:
        deadline = trio.current_time() + self._query_timeout_s + 4 * BROKER_TIMEOUT_S
        with trio.CancelScope(shield=self._clustered, deadline=deadline):
            window = self._channel_state(channel).window
            # In a cluster, a window that is unknown here (or one a first subscriber asked
            # for) is first taken from the broker: no query if the cluster's is fresh.
            if window is not None and (window.position is None or tick_id is None):
                fresh = await self._took_window_from_broker(channel, window)
                if fresh and tick_id is None:
                    return
            won = await self._claim(channel, tick_id)
            if won is None:
                return  # another node serves this tick
            claim, broker = won
            await self._query_and_publish(channel, claim, broker)

    async def _claim(self, channel: Channel, tick_id: int | None) -> tuple[Claim, Broker] | None:
        """The lease and seq from the broker; from the fallback (counted) while the cluster's
        broker is unreachable; None if another node won."""
        if self._clustered:
            try:
                with trio.fail_after(BROKER_TIMEOUT_S):
                    claim = await self._broker.claim(channel, tick_id)
            except (BrokerUnavailable, trio.TooSlowError):
                self._hub.counters.cluster_fallback_queries += 1
            else:
                return None if claim is None else (claim, self._broker)
        at_least = self._channel_state(channel).seq
        claim = Claim(self._fallback.next_seq(channel, at_least), self._fallback.epoch)
        return claim, self._fallback

    async def _query_and_publish(self, channel: Channel, claim: Claim, broker: Broker) -> None:
        name = channel.topic
        topic_state = self.states[name]
        window = self._channel_state(channel).window
        if window is not None and not window.follows(claim.epoch, claim.seq):
            window.reset()  # behind the channel's numbering (or none yet): read it whole
        topic_state.queries += 1
        started = trio.current_time()
        try:
            read = await self._read(channel, window)
        except Exception as exc:  # a bug reached by this channel's data: contained to it
            read = internal_failure(channel, exc)
        self._hub.timings.observe_query(name, trio.current_time() - started)
        outcome: Update | Failure
        if isinstance(read, Failure):
            outcome = read
        elif window is None:
            outcome = self._encode(channel, claim, read)
        else:
            outcome = encode_window(channel, claim, window, read)
        if isinstance(outcome, Failure) and window is None:
            await self._learn_last_value(channel)
        try:
            self._record(channel, outcome)
            if window is None:
                publication = self._publication(channel, claim, outcome)
            else:
                shared = broker is not self._fallback  # kept by Redis for the other nodes
                publication = window_publication(channel, claim, window, outcome, shared=shared)
        except Exception:  # a bug in recording this channel: contained to it
            topic_state.failures += 1
            log.exception("topic refresh failed", **log_fields(channel))
            return
        try:
            with trio.fail_after(BROKER_TIMEOUT_S):
                published = await broker.publish(publication)
        except (BrokerUnavailable, trio.TooSlowError):
            # The broker went away after the claim: this node's subscribers still get it.
            self._deliver(publication)
            return
        if not published and window is not None:
            window.position = None  # what it merged never went out: load or read it again

    async def _learn_last_value(self, channel: Channel) -> None:
        """Before resending a stale value: a node that joined the cluster after the last good
        value was published takes it from the broker (nothing to learn standalone)."""
        state = self._channel_state(channel)
        if state.last_update is not None or not self._clustered:
            return
        try:
            with trio.fail_after(BROKER_TIMEOUT_S):
                last = await self._broker.last_value(channel)
        except (BrokerUnavailable, trio.TooSlowError):
            return
        if last is not None:
            state.last_update = last.publication.update
            state.as_of_unix_s = last.publication.as_of_unix_s

    async def _read(self, channel: Channel, window: WindowChannel | None = None) -> Value | Failure:
        """Query and shape one channel's value, or say why not, within the query timeout.

        A window topic's value is the raw answer for the range its window needs next.
        """
        topic = self._topics[channel.topic]
        read_at_ms = time.time() * 1000
        time_range = None
        if window is not None:
            read_at_ms = float(int(read_at_ms))
            time_range = window.read_range(int(read_at_ms))
        with trio.move_on_after(self._query_timeout_s):
            try:
                results = await self._source.query(topic.query_for(channel.tenant, time_range))
            except SourceError as exc:
                return Failure(cause_of(exc), str(exc))
            if time_range is not None:
                return Value(results, read_at_ms)
            try:
                return Value(topic.shape(results), read_at_ms)
            except (KeyError, IndexError, TypeError, ValueError) as exc:
                # The answer parsed but did not have the shape the topic expects.
                log.exception("topic result could not be shaped", **log_fields(channel))
                return Failure(
                    FailureCause.BAD_RESPONSE,
                    str(
                        SourceResponseError(f"unexpected result for topic {topic.name!r}: {exc!r}")
                    ),
                )
        return Failure(
            FailureCause.TIMEOUT,
            f"query timed out after {round(self._query_timeout_s * 1000)} ms",
        )

    def _encode(self, channel: Channel, claim: Claim, value: Value) -> Update | Failure:
        """The value's frame, encoded once for every subscriber; or why it cannot be sent."""
        name = channel.topic
        try:
            timestamp = protocol.iso_from_unix_ms(value.read_at_ms)
            assert timestamp is not None
            text = protocol.metrics_update(
                name, claim.seq, timestamp, value.data, stale=False, epoch=claim.epoch
            )
        except (TypeError, ValueError) as exc:  # orjson.JSONEncodeError is a TypeError
            log.exception("topic value could not be encoded", **log_fields(channel))
            return Failure(
                FailureCause.BAD_RESPONSE,
                f"the result for topic {name!r} cannot be encoded as JSON: {exc}",
            )
        except Exception as exc:
            return internal_failure(channel, exc)
        return Update(text, value.data)

    def _record(self, channel: Channel, outcome: Update | Failure) -> None:
        """Remember the outcome in the source's health, and log a failure."""
        if isinstance(outcome, Update):
            self._health.record_success()
            return
        self.states[channel.topic].failures += 1
        cause = outcome.cause
        if cause is not FailureCause.INTERNAL:  # our bug says nothing of the database
            self._health.record_failure(outcome.text)
        # A rejected query is a configuration mistake (a topics file), not an outage.
        level = log.error if cause is FailureCause.QUERY_REJECTED else log.warning
        level("topic query failed", **log_fields(channel), cause=cause.value, error=outcome.text)

    def _publication(
        self, channel: Channel, claim: Claim, outcome: Update | Failure
    ) -> Publication:
        """The new frame; or the error, then the last good value marked stale."""
        if isinstance(outcome, Update):
            return Publication(
                channel, claim.seq, claim.epoch, None, outcome.text, as_of_unix_s(outcome.data)
            )
        message, fields = protocol.query_failed_error(channel.topic, outcome.cause, outcome.text)
        error = protocol.error(ErrorCode.INFLUXDB_UNAVAILABLE, message, **fields)
        state = self.channels.get(channel)
        last = None if state is None else state.last_update
        stale = None if last is None else stale_copy(last, claim.seq, claim.epoch)
        as_of = None if state is None else state.as_of_unix_s
        return Publication(channel, claim.seq, claim.epoch, error, stale, as_of)

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
        state = self._channel_state(channel)
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
        except (ValueError, KeyError, TypeError):
            log.exception("window publication could not be merged", **log_fields(channel))
        log.info(
            "window behind the cluster's numbering: taking it again",
            **log_fields(channel),
            seq=publication.seq,
        )
        if channel not in self._refresh_pending:
            self._request_refresh(channel)
        return False

    async def _took_window_from_broker(self, channel: Channel, window: WindowChannel) -> bool:
        """In a cluster, take the channel's whole window from the broker's last value (kept
        with every window publication) and hand it to this node's subscribers; whether it is
        from the last interval (then no query is needed for a new subscriber)."""
        if not self._clustered or self._broker.mode != "cluster":
            return False
        try:
            with trio.fail_after(BROKER_TIMEOUT_S):
                last = await self._broker.last_value(channel)
        except (BrokerUnavailable, trio.TooSlowError):
            return False
        if last is None or last.publication.whole is None:
            return False
        kept, state = last.publication, self._channel_state(channel)
        fresh = last.age_s < self._interval_s
        if window.position == (kept.epoch, kept.seq):
            return fresh
        if kept.epoch == state.epoch and kept.seq < state.seq:
            return False  # older than what this node delivered since
        whole = Publication(channel, kept.seq, kept.epoch, None, kept.whole, kept.as_of_unix_s)
        try:
            window.absorb(whole)
        except (ValueError, KeyError, TypeError):
            log.exception("the cluster's window could not be loaded", **log_fields(channel))
            return False
        state.seq, state.epoch = kept.seq, kept.epoch
        self.states[channel.topic].seq = max(self.states[channel.topic].seq, kept.seq)
        frame = window.whole_frame(channel.topic, kept.seq, epoch=kept.epoch)
        if frame is not None:
            state.latest = (frame, trio.current_time())
            self._hub.publish(channel, frame)
        return fresh
