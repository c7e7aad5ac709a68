"""The broadcast loop: every tick, each topic someone listens to is queried once, encoded once,
and the same frame is published to all its subscribers.

Ticks are drift-free (scheduled at ``start + k * interval``); a tick that overruns skips the
ticks it missed instead of bunching them up. A topic whose query fails or times out sends
its subscribers an ``influxdb_unavailable`` error and then the last good value again with
``"stale": true``; the next good answer clears it.

One refresh of a topic is a pipeline, each step a method::

    query (+ shape) -> outcome: _Value | _Failure(cause, text)
    encode          -> outcome: _Update (the frame) | _Failure
    record          -> topic state, source health, the log
    publish         -> the frame, or the error and the stale value, through the hub

Whatever a topic's data makes go wrong ends as that topic's failure, never the loop's.

The loop also keeps each topic's latest published frame, which is what a new subscriber is
offered at once (:meth:`BroadcastLoop.on_subscribe`, called by the hub), and queries a topic
as soon as it gets its first subscriber if it has no value from the last interval.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog
import trio

from broadcaster import protocol
from broadcaster.broadcast.topics import Topic
from broadcaster.errors import QueryRejected, SourceError, SourceResponseError
from broadcaster.hub import Hub
from broadcaster.protocol import ErrorCode, FailureCause
from broadcaster.sources.base import MetricsSource
from broadcaster.sources.health import SourceHealth
from broadcaster.ws.frames import Frame

log = structlog.get_logger("broadcaster.broadcast.loop")


@dataclass
class TopicState:
    """What the loop remembers of one topic."""

    seq: int = 0
    last_good_data: Any = None
    last_good_timestamp: str | None = None
    queries: int = 0
    failures: int = 0


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
        self.ticks = 0
        self.skipped_ticks = 0
        # Per topic, the last frame published and when (trio.current_time()).
        self._latest: dict[str, tuple[Frame, float]] = {}
        self._refresh_pending: set[str] = set()
        # One slot per topic is enough: a pending topic is never requested twice.
        self._refresh_send, self._refresh_requests = trio.open_memory_channel[str](
            max(1, len(topics))
        )
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
                self.skipped_ticks += missed
                next_tick += missed * self._interval_s
                log.warning("tick overran its interval", skipped_ticks=missed)

    async def tick(self) -> None:
        """Query every topic with subscribers, concurrently, and publish the results."""
        self.ticks += 1
        topics = self._hub.topics_with_subscribers()
        if not topics:
            return
        async with trio.open_nursery() as nursery:
            for name in topics:
                nursery.start_soon(self.refresh, name)

    # --- new subscribers: the latest value, or a refresh ------------------------------------

    def on_subscribe(self, topic: str, *, first: bool) -> Frame | None:
        """The frame to offer a new subscriber of ``topic`` at once, or None.

        A refresh in flight will publish to every subscriber, so nothing is offered. A value
        from the last interval is as fresh as a tick's, so it is offered as is: resubscribing
        cannot force queries. Only a topic nobody followed (``first``) with no recent value is
        queried at once; a followed topic's next tick comes within an interval anyway.
        """
        if topic in self._refresh_pending:
            return None
        latest = self._latest.get(topic)
        if latest is not None and (not first or trio.current_time() - latest[1] < self._interval_s):
            return latest[0]
        if first:
            self._request_refresh(topic)
        return None

    def _request_refresh(self, topic: str) -> None:
        try:
            self._refresh_send.send_nowait(topic)
        except trio.WouldBlock:  # cannot happen: one slot per topic, and pending topics dedupe
            return
        self._refresh_pending.add(topic)

    async def _answer_refresh_requests(self) -> None:
        async with trio.open_nursery() as nursery:
            async for name in self._refresh_requests:
                nursery.start_soon(self._refresh_requested, name)

    async def _refresh_requested(self, name: str) -> None:
        try:
            await self.refresh(name)
        finally:
            self._refresh_pending.discard(name)

    # --- one refresh: query -> outcome -> record -> publish ----------------------------------

    async def refresh(self, name: str) -> None:
        """Query one topic under the timeout and publish its value, or the failure.

        Whatever goes wrong here ends this topic's refresh, never the loop or another topic:
        a failure is reported to the topic's subscribers and the loop goes on.
        """
        state = self.states[name]
        state.queries += 1
        try:
            read = await self._read(name)
        except Exception as exc:  # a bug reached by this topic's data: contained to it
            read = _internal_failure(name, exc)
        state.seq += 1
        outcome = self._encode(name, state.seq, read) if isinstance(read, _Value) else read
        try:
            self._record(name, state, outcome)
            self._publish(name, state, outcome)
        except Exception:  # a bug in recording or fanning out this topic: contained to it
            state.failures += 1
            log.exception("topic refresh failed", topic=name)

    async def _read(self, name: str) -> _Value | _Failure:
        """Query and shape one topic's value, or say why not, within the query timeout."""
        topic = self._topics[name]
        read_at_ms = time.time() * 1000
        with trio.move_on_after(self._query_timeout_s):
            try:
                results = await self._source.query(topic.query)
            except SourceError as exc:
                return _Failure(_cause_of(exc), str(exc))
            try:
                return _Value(topic.shape(results), read_at_ms)
            except (KeyError, IndexError, TypeError, ValueError) as exc:
                # The answer parsed but did not have the shape the topic expects.
                log.exception("topic result could not be shaped", topic=name)
                return _Failure(
                    FailureCause.BAD_RESPONSE,
                    str(SourceResponseError(f"unexpected result for topic {name!r}: {exc!r}")),
                )
        return _Failure(
            FailureCause.TIMEOUT,
            f"query timed out after {round(self._query_timeout_s * 1000)} ms",
        )

    def _encode(self, name: str, seq: int, value: _Value) -> _Update | _Failure:
        """The value's frame, encoded once for every subscriber; or why it cannot be sent."""
        try:
            timestamp = protocol.iso_from_unix_ms(value.read_at_ms)
            assert timestamp is not None
            text = protocol.metrics_update(name, seq, timestamp, value.data, stale=False)
        except (TypeError, ValueError) as exc:  # orjson.JSONEncodeError is a TypeError
            log.exception("topic value could not be encoded", topic=name)
            return _Failure(
                FailureCause.BAD_RESPONSE,
                f"the result for topic {name!r} cannot be encoded as JSON: {exc}",
            )
        except Exception as exc:
            return _internal_failure(name, exc)
        return _Update(Frame(text, topic=name), value.data, timestamp)

    def _record(self, name: str, state: TopicState, outcome: _Update | _Failure) -> None:
        """Remember the outcome in the topic's state and the source's health, and log a failure."""
        if isinstance(outcome, _Update):
            self._health.record_success()
            state.last_good_data = outcome.data
            state.last_good_timestamp = outcome.timestamp
            return
        state.failures += 1
        cause = outcome.cause
        if cause is not FailureCause.INTERNAL:  # our bug says nothing of the database
            self._health.record_failure(outcome.text)
        # A rejected query is a configuration mistake (a topics file), not an outage.
        level = log.error if cause is FailureCause.QUERY_REJECTED else log.warning
        level("topic query failed", topic=name, cause=cause.value, error=outcome.text)

    def _publish(self, name: str, state: TopicState, outcome: _Update | _Failure) -> None:
        """Publish the new frame; or the error, then the last good value marked stale."""
        if isinstance(outcome, _Update):
            self._publish_update(name, outcome.frame)
            return
        message, fields = protocol.query_failed_error(name, outcome.cause, outcome.text)
        self._hub.publish_error(name, ErrorCode.INFLUXDB_UNAVAILABLE, message, **fields)
        if state.last_good_timestamp is not None:
            text = protocol.metrics_update(
                name, state.seq, state.last_good_timestamp, state.last_good_data, stale=True
            )
            self._publish_update(name, Frame(text, topic=name))

    def _publish_update(self, name: str, frame: Frame) -> None:
        """Publish a ``metrics_update``, which also becomes the topic's latest value."""
        self._latest[name] = (frame, trio.current_time())
        self._hub.publish(name, frame)


def _cause_of(error: SourceError) -> FailureCause:
    """The wire's word for a source error."""
    if isinstance(error, QueryRejected):
        return FailureCause.QUERY_REJECTED
    if isinstance(error, SourceResponseError):
        return FailureCause.BAD_RESPONSE
    return FailureCause.UNAVAILABLE


def _internal_failure(name: str, exc: Exception) -> _Failure:
    log.error("topic refresh failed", topic=name, exc_info=exc)
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
