"""The broadcast loop: every tick, each topic someone listens to is queried once, encoded once,
and the same frame is published to all its subscribers.

Ticks are drift-free (scheduled at ``start + k * interval``); a tick that overruns skips the
ticks it missed instead of bunching them up. A topic whose query fails or times out sends
its subscribers an ``influxdb_unavailable`` error and then the last good value again with
``"stale": true``; the next good answer clears it. Besides the ticks, a topic that gets its
first subscriber is queried at once (see :mod:`broadcaster.hub`).
"""

from __future__ import annotations

import enum
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
from broadcaster.protocol import ErrorCode
from broadcaster.sources.base import MetricsSource
from broadcaster.sources.health import SourceHealth
from broadcaster.ws.frames import Frame

log = structlog.get_logger("broadcaster.broadcast.loop")


class FailureCause(enum.StrEnum):
    """Why a topic's query failed: the ``cause`` of its ``influxdb_unavailable`` error."""

    UNAVAILABLE = "unavailable"
    TIMEOUT = "timeout"
    QUERY_REJECTED = "query_rejected"
    BAD_RESPONSE = "bad_response"
    INTERNAL = "internal_error"

    @classmethod
    def of(cls, error: SourceError) -> FailureCause:
        if isinstance(error, QueryRejected):
            return cls.QUERY_REJECTED
        if isinstance(error, SourceResponseError):
            return cls.BAD_RESPONSE
        return cls.UNAVAILABLE


@dataclass
class TopicState:
    """What the loop remembers of one topic."""

    seq: int = 0
    last_good_data: Any = None
    last_good_timestamp: str | None = None
    queries: int = 0
    failures: int = 0


class Broadcaster:
    """Produces each topic's value and publishes it through the hub."""

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

    async def _answer_refresh_requests(self) -> None:
        async with trio.open_nursery() as nursery:
            async for name in self._hub.refresh_requests:
                nursery.start_soon(self._refresh_requested, name)

    async def _refresh_requested(self, name: str) -> None:
        try:
            await self.refresh(name)
        finally:
            self._hub.refresh_done(name)

    async def refresh(self, name: str) -> None:
        """Query one topic under the timeout and publish its value, or the failure.

        Whatever goes wrong here ends this topic's refresh, never the loop or another topic:
        a failure is reported to the topic's subscribers and the loop goes on.
        """
        state = self.states[name]
        state.queries += 1
        try:
            outcome = await self._read(name)
        except Exception as exc:  # a bug reached by this topic's data: contained to it
            outcome = _internal_failure(name, exc)
        state.seq += 1
        try:
            failure = (
                self._publish_value(name, state, outcome)
                if isinstance(outcome, _Value)
                else outcome
            )
        except Exception as exc:
            failure = _internal_failure(name, exc)
        if failure is not None:
            self._publish_failure(name, state, failure)

    async def _read(self, name: str) -> _Value | _Failure:
        """Query and shape one topic's value, or say why not, within the query timeout."""
        topic = self._topics[name]
        read_at_ms = time.time() * 1000
        with trio.move_on_after(self._query_timeout_s):
            try:
                results = await self._source.query(topic.query)
            except SourceError as exc:
                return _Failure(FailureCause.of(exc), str(exc))
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

    def _publish_value(self, name: str, state: TopicState, value: _Value) -> _Failure | None:
        """Encode and publish a good value; a value that cannot be encoded is a failure."""
        timestamp = protocol.iso_from_unix_ms(value.read_at_ms)
        assert timestamp is not None
        try:
            text = protocol.metrics_update(name, state.seq, timestamp, value.data, stale=False)
        except (TypeError, ValueError) as exc:  # orjson.JSONEncodeError is a TypeError
            log.exception("topic value could not be encoded", topic=name)
            return _Failure(
                FailureCause.BAD_RESPONSE,
                f"the result for topic {name!r} cannot be encoded as JSON: {exc}",
            )
        self._health.record_success()
        state.last_good_data = value.data
        state.last_good_timestamp = timestamp
        self._hub.publish(name, Frame(text, topic=name))
        return None

    def _publish_failure(self, name: str, state: TopicState, failure: _Failure) -> None:
        """Tell the topic's subscribers, then resend the last good value marked stale."""
        state.failures += 1
        cause = failure.cause
        if cause is not FailureCause.INTERNAL:  # our bug says nothing of the database
            self._health.record_failure(failure.text)
        # A rejected query is a configuration mistake (a topics file), not an outage.
        level = log.error if cause is FailureCause.QUERY_REJECTED else log.warning
        level("topic query failed", topic=name, cause=cause.value, error=failure.text)
        message = f"InfluxDB query for topic {name!r} failed: {failure.text}"
        self._hub.publish_error(
            name,
            Frame(
                protocol.error(
                    ErrorCode.INFLUXDB_UNAVAILABLE, message, topic=name, cause=cause.value
                )
            ),
            f"{ErrorCode.INFLUXDB_UNAVAILABLE.value}: {message}",
        )
        if state.last_good_timestamp is not None:
            self._hub.publish(
                name,
                Frame(
                    protocol.metrics_update(
                        name, state.seq, state.last_good_timestamp, state.last_good_data, stale=True
                    ),
                    topic=name,
                ),
            )


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
class _Failure:
    """Why a topic has no new value this time."""

    cause: FailureCause
    text: str
