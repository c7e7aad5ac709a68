"""The broadcast loop: every tick, each channel someone listens to is queried once, encoded
once, and the same frame is published to all its subscribers.

A channel (:class:`~broadcaster.channels.Channel`) is a topic for everyone, or a tenant topic
for one tenant: a tenant topic with subscribers in three tenants is three queries per tick,
each tenant's value published only to its own connections.

Ticks are drift-free (scheduled at ``start + k * interval``); a tick that overruns skips the
ticks it missed instead of bunching them up. A topic whose query fails or times out sends
its subscribers an ``influxdb_unavailable`` error and then the last good value again with
``"stale": true``; the next good answer clears it.

One refresh of a topic is a pipeline, each step a method::

    query (+ shape) -> outcome: _Value | _Failure(cause, text)
    encode          -> outcome: _Update (the frame) | _Failure
    record          -> topic state, source health, the log
    publish         -> the frame, or the error and the stale value, through the hub

Whatever a channel's data makes go wrong ends as that channel's failure, never the loop's
nor another channel's.

The loop also keeps each channel's latest published frame, which is what a new subscriber is
offered at once (:meth:`BroadcastLoop.on_subscribe`, called by the hub), and queries a channel
as soon as it gets its first subscriber if it has no value from the last interval. A tenant's
channel nobody listens to any more is forgotten at the next tick.

A window topic's channel keeps its window (:mod:`broadcaster.broadcast.window_channel`): its
first refresh reads the whole window and publishes it as a ``metrics_update``; each later one
reads only the tail and publishes a ``metrics_append`` with the new and changed rows. A new
subscriber (and a ``snapshot`` request) gets the whole window from memory; a failure
publishes the error and the whole window marked stale.

``seq`` stays the topic's counter: a channel starts from the highest ``seq`` its topic has
reached, so a tenant's ``seq`` grows by 1 per query of its channel and never goes back, even
after its channel was forgotten and made again.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
import trio

from broadcaster import protocol
from broadcaster.broadcast.topics import Topic
from broadcaster.broadcast.window_channel import WindowChannel
from broadcaster.channels import Channel
from broadcaster.errors import QueryRejected, SourceError, SourceResponseError
from broadcaster.hub import Hub
from broadcaster.protocol import ErrorCode, FailureCause
from broadcaster.sources.base import MetricsSource
from broadcaster.sources.health import SourceHealth
from broadcaster.ws.frames import Frame

log = structlog.get_logger("broadcaster.broadcast.loop")


@dataclass
class TopicState:
    """What the loop counts of one topic, over all its channels.

    ``seq``: the highest ``seq`` any channel of the topic has used.
    """

    seq: int = 0
    queries: int = 0
    failures: int = 0


@dataclass
class ChannelState:
    """What the loop remembers of one channel: its values."""

    seq: int
    last_good_data: Any = None
    last_good_timestamp: str | None = None
    # When the newest point of the last good value was taken, if its data says (``asOf``).
    as_of_unix_s: float | None = None
    # The last frame published and when (trio.current_time()): what a new subscriber gets.
    latest: tuple[Frame, float] | None = None
    # A window topic's window, and what is made from it.
    window: WindowChannel | None = None


class BroadcastLoop:
    """Produces each topic's value, publishes it through the hub and remembers the latest.

    Constructing it makes it the hub's subscription listener, so it must exist before the
    first connection subscribes for that subscription to trigger a refresh.
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
        after_tick: Callable[[], None] = lambda: None,
    ) -> None:
        """``after_tick`` runs once each tick has published (the service collects garbage)."""
        self._hub = hub
        self._after_tick = after_tick
        self._source = source
        self._topics = topics
        self._health = health
        self._interval_s = interval_s
        self._query_timeout_s = query_timeout_s
        self.states: dict[str, TopicState] = {name: TopicState() for name in topics}
        self.channels: dict[Channel, ChannelState] = {}
        self.ticks = 0
        self._refresh_pending: set[Channel] = set()
        # Unbounded in type only: a pending channel is never requested twice, so it holds at
        # most one request per channel with subscribers (which the connection cap bounds).
        self._refresh_send, self._refresh_requests = trio.open_memory_channel[Channel](math.inf)
        hub.subscription_listener = self

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Tick forever and answer refresh requests; stops only when cancelled."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._answer_refresh_requests)
            task_status.started()
            await self._tick_forever()

    async def _tick_forever(self) -> None:
        next_tick = trio.current_time() + self._interval_s
        while True:
            await trio.sleep_until(next_tick)
            await self.tick()
            self._after_tick()
            next_tick += self._interval_s
            behind = trio.current_time() - next_tick
            if behind >= 0:
                missed = math.floor(behind / self._interval_s) + 1
                self._hub.counters.ticks_skipped += missed
                next_tick += missed * self._interval_s
                log.warning("tick overran its interval", skipped_ticks=missed)

    @property
    def skipped_ticks(self) -> int:
        """Ticks skipped because the one before overran (counted in the hub's counters)."""
        return self._hub.counters.ticks_skipped

    async def tick(self) -> None:
        """Query every channel with subscribers, concurrently, and publish the results.

        A tick that queries something is timed, from its start to the last frame handed to
        the sockets (publishing writes synchronously): ``tick_duration`` of the hub's timings.
        """
        self.ticks += 1
        channels = self._hub.channels_with_subscribers()
        self._forget_tenant_channels_except(channels)
        if not channels:
            return
        started = trio.current_time()
        async with trio.open_nursery() as nursery:
            for channel in channels:
                nursery.start_soon(self.refresh, channel)
        self._hub.timings.tick_duration.observe(trio.current_time() - started)

    def _forget_tenant_channels_except(self, listened: list[Channel]) -> None:
        """Drop the state of tenant channels nobody listens to (none is being refreshed), so
        that it grows with the tenants connected, not with every tenant ever seen."""
        keep = set(listened) | self._refresh_pending
        for channel in [c for c in self.channels if c.tenant is not None and c not in keep]:
            del self.channels[channel]

    def _channel_state(self, channel: Channel) -> ChannelState:
        state = self.channels.get(channel)
        if state is None:
            spec = self._topics[channel.topic].window
            state = self.channels[channel] = ChannelState(
                seq=self.states[channel.topic].seq,
                window=None if spec is None else WindowChannel(spec),
            )
        return state

    # --- new subscribers: the latest value, or a refresh ------------------------------------

    def on_subscribe(self, channel: Channel, *, first: bool) -> Frame | None:
        """The frame to offer a new subscriber of ``channel`` at once, or None.

        A refresh in flight will publish to every subscriber, so nothing is offered. A value
        from the last interval is as fresh as a tick's, so it is offered as is: resubscribing
        cannot force queries. Only a channel nobody followed (``first``) with no recent value
        is queried at once; a followed channel's next tick comes within an interval anyway.
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
        if state.last_good_timestamp is None:
            return None
        return state.window.whole_frame(
            channel.topic, state.seq, state.last_good_timestamp, state.last_good_data
        )

    def _request_refresh(self, channel: Channel) -> None:
        self._refresh_send.send_nowait(channel)  # never blocks: the buffer is unbounded
        self._refresh_pending.add(channel)

    async def _answer_refresh_requests(self) -> None:
        async with trio.open_nursery() as nursery:
            async for channel in self._refresh_requests:
                nursery.start_soon(self._refresh_requested, channel)

    async def _refresh_requested(self, channel: Channel) -> None:
        try:
            await self.refresh(channel)
        finally:
            self._refresh_pending.discard(channel)

    # --- one refresh: query -> outcome -> record -> publish ----------------------------------

    async def refresh(self, channel: Channel) -> None:
        """Query one channel under the timeout and publish its value, or the failure.

        Whatever goes wrong here ends this channel's refresh, never the loop or another
        channel: a failure is reported to the channel's subscribers and the loop goes on.
        """
        window = self._channel_state(channel).window
        if window is None:
            await self._refresh(channel)
            return
        async with window.refreshing:  # see window_channel: appends follow seq
            await self._refresh(channel)

    async def _refresh(self, channel: Channel) -> None:
        name = channel.topic
        topic_state = self.states[name]
        state = self._channel_state(channel)
        topic_state.queries += 1
        started = trio.current_time()
        try:
            read = await self._read(channel, state)
        except Exception as exc:  # a bug reached by this channel's data: contained to it
            read = _internal_failure(channel, exc)
        self._hub.timings.observe_query(name, trio.current_time() - started)
        state.seq += 1
        topic_state.seq = max(topic_state.seq, state.seq)
        if isinstance(read, _Value) and state.window is not None:
            outcome = self._encode_window(channel, state, read)
        else:
            outcome = self._encode(channel, state.seq, read) if isinstance(read, _Value) else read
        try:
            self._record(channel, state, outcome)
            self._publish(channel, state, outcome)
        except Exception:  # a bug in recording or fanning out this channel: contained to it
            topic_state.failures += 1
            log.exception("topic refresh failed", **_log_fields(channel))

    async def _read(self, channel: Channel, state: ChannelState) -> _Value | _Failure:
        """Query and shape one channel's value, or say why not, within the query timeout.

        A window topic's value is the raw answer for the range its window needs next.
        """
        topic = self._topics[channel.topic]
        read_at_ms = time.time() * 1000
        time_range = None
        if state.window is not None:
            read_at_ms = float(int(read_at_ms))
            time_range = state.window.read_range(int(read_at_ms))
        with trio.move_on_after(self._query_timeout_s):
            try:
                results = await self._source.query(topic.query_for(channel.tenant, time_range))
            except SourceError as exc:
                return _Failure(_cause_of(exc), str(exc))
            if time_range is not None:
                return _Value(results, read_at_ms)
            try:
                return _Value(topic.shape(results), read_at_ms)
            except (KeyError, IndexError, TypeError, ValueError) as exc:
                # The answer parsed but did not have the shape the topic expects.
                log.exception("topic result could not be shaped", **_log_fields(channel))
                return _Failure(
                    FailureCause.BAD_RESPONSE,
                    str(
                        SourceResponseError(f"unexpected result for topic {topic.name!r}: {exc!r}")
                    ),
                )
        return _Failure(
            FailureCause.TIMEOUT,
            f"query timed out after {round(self._query_timeout_s * 1000)} ms",
        )

    def _encode(self, channel: Channel, seq: int, value: _Value) -> _Update | _Failure:
        """The value's frame, encoded once for every subscriber; or why it cannot be sent."""
        name = channel.topic
        try:
            timestamp = protocol.iso_from_unix_ms(value.read_at_ms)
            assert timestamp is not None
            text = protocol.metrics_update(name, seq, timestamp, value.data, stale=False)
        except (TypeError, ValueError) as exc:  # orjson.JSONEncodeError is a TypeError
            log.exception("topic value could not be encoded", **_log_fields(channel))
            return _Failure(
                FailureCause.BAD_RESPONSE,
                f"the result for topic {name!r} cannot be encoded as JSON: {exc}",
            )
        except Exception as exc:
            return _internal_failure(channel, exc)
        return _Update(Frame(text, topic=name), value.data, timestamp)

    def _encode_window(
        self, channel: Channel, state: ChannelState, value: _Value
    ) -> _Update | _Failure:
        """Merge a window topic's answer into its window: the whole window the first time
        (``metrics_update``), then only what changed (``metrics_append``); or why not."""
        name, window = channel.topic, state.window
        assert window is not None
        timestamp = protocol.iso_from_unix_ms(value.read_at_ms)
        try:
            text, data = window.encode(
                name, state.seq, timestamp, value.data, int(value.read_at_ms)
            )
        except TypeError as exc:  # orjson.JSONEncodeError
            log.exception("topic value could not be encoded", **_log_fields(channel))
            return _Failure(
                FailureCause.BAD_RESPONSE,
                f"the result for topic {name!r} cannot be encoded as JSON: {exc}",
            )
        except ValueError as exc:  # not a window's answer: nothing was merged
            log.exception("topic result could not be shaped", **_log_fields(channel))
            return _Failure(
                FailureCause.BAD_RESPONSE,
                str(SourceResponseError(f"unexpected result for window topic {name!r}: {exc}")),
            )
        return _Update(Frame(text, topic=name), data, timestamp)

    def _record(self, channel: Channel, state: ChannelState, outcome: _Update | _Failure) -> None:
        """Remember the outcome in the channel's state and the source's health, and log a
        failure."""
        if isinstance(outcome, _Update):
            self._health.record_success()
            state.last_good_data = outcome.data
            state.last_good_timestamp = outcome.timestamp
            state.as_of_unix_s = _as_of_unix_s(outcome.data)
            return
        self.states[channel.topic].failures += 1
        cause = outcome.cause
        if cause is not FailureCause.INTERNAL:  # our bug says nothing of the database
            self._health.record_failure(outcome.text)
        # A rejected query is a configuration mistake (a topics file), not an outage.
        level = log.error if cause is FailureCause.QUERY_REJECTED else log.warning
        level("topic query failed", **_log_fields(channel), cause=cause.value, error=outcome.text)

    def _publish(self, channel: Channel, state: ChannelState, outcome: _Update | _Failure) -> None:
        """Publish the new frame; or the error, then the last good value marked stale."""
        if state.window is not None:
            state.window.published(stale=isinstance(outcome, _Failure))
        if isinstance(outcome, _Update):
            self._publish_update(channel, state, outcome.frame)
            return
        name = channel.topic
        message, fields = protocol.query_failed_error(name, outcome.cause, outcome.text)
        self._hub.publish_error(channel, ErrorCode.INFLUXDB_UNAVAILABLE, message, **fields)
        if state.last_good_timestamp is not None:
            text = protocol.metrics_update(
                name, state.seq, state.last_good_timestamp, state.last_good_data, stale=True
            )
            self._publish_update(channel, state, Frame(text, topic=name))

    def _publish_update(self, channel: Channel, state: ChannelState, frame: Frame) -> None:
        """Publish a ``metrics_update`` (or a window's ``metrics_append``), which also becomes
        the channel's latest value."""
        state.latest = (frame, trio.current_time())
        self._hub.publish(channel, frame)


def _log_fields(channel: Channel) -> dict[str, str]:
    """How a log line names a channel: its topic, and its tenant if it has one."""
    if channel.tenant is None:
        return {"topic": channel.topic}
    return {"topic": channel.topic, "tenant": channel.tenant}


def _as_of_unix_s(data: Any) -> float | None:
    """The ``asOf`` a topic's data gives (the built-in topics': its newest point), as Unix
    seconds; None when the data says nothing of its age or says it unreadably."""
    as_of = data.get("asOf") if isinstance(data, dict) else None
    if not isinstance(as_of, str):
        return None
    try:
        return datetime.fromisoformat(as_of).timestamp()
    except ValueError:
        return None


def _cause_of(error: SourceError) -> FailureCause:
    """The wire's word for a source error."""
    if isinstance(error, QueryRejected):
        return FailureCause.QUERY_REJECTED
    if isinstance(error, SourceResponseError):
        return FailureCause.BAD_RESPONSE
    return FailureCause.UNAVAILABLE


def _internal_failure(channel: Channel, exc: Exception) -> _Failure:
    log.error("topic refresh failed", **_log_fields(channel), exc_info=exc)
    return _Failure(
        FailureCause.INTERNAL, f"internal error ({type(exc).__name__}); see the service log"
    )


@dataclass(frozen=True, slots=True)
class _Value:
    """A topic's shaped value and when it was read."""

    data: Any
    read_at_ms: float


@dataclass(frozen=True, slots=True)
class _Update:
    """A good value, encoded: the frame every subscriber gets, and what a stale resend needs."""

    frame: Frame
    data: Any
    timestamp: str


@dataclass(frozen=True, slots=True)
class _Failure:
    """Why a topic has no new value this time."""

    cause: FailureCause
    text: str
