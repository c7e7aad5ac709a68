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
from broadcaster.errors import QueryRejected, SourceError, SourceResponseError
from broadcaster.frames import Frame
from broadcaster.hub import Hub
from broadcaster.protocol import ErrorCode
from broadcaster.source_health import SourceHealth
from broadcaster.sources.base import MetricsSource
from broadcaster.topics import Topic

log = structlog.get_logger("broadcaster.broadcast")


class FailureCause(enum.StrEnum):
    """Why a topic's query failed: the ``cause`` of its ``influxdb_unavailable`` error."""

    UNAVAILABLE = "unavailable"
    TIMEOUT = "timeout"
    QUERY_REJECTED = "query_rejected"
    BAD_RESPONSE = "bad_response"

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
        """Query one topic under the timeout and publish its value, or the failure."""
        topic = self._topics[name]
        state = self.states[name]
        state.queries += 1
        data: Any = None
        failure: str | None = None
        cause = FailureCause.UNAVAILABLE
        read_at_ms = time.time() * 1000
        with trio.move_on_after(self._query_timeout_s) as deadline:
            try:
                data = topic.shape(await self._source.query(topic.query))
            except SourceError as exc:
                failure, cause = str(exc), FailureCause.of(exc)
            except (KeyError, IndexError, TypeError, ValueError) as exc:
                # The answer parsed but did not have the shape the topic expects.
                failure = str(SourceResponseError(f"unexpected result for topic {name!r}: {exc!r}"))
                cause = FailureCause.BAD_RESPONSE
                log.exception("topic result could not be shaped", topic=name)
        if deadline.cancelled_caught:
            failure = f"query timed out after {round(self._query_timeout_s * 1000)} ms"
            cause = FailureCause.TIMEOUT
        state.seq += 1
        if failure is None:
            self._health.record_success()
            state.last_good_data = data
            state.last_good_timestamp = protocol.iso_from_unix_ms(read_at_ms)
            assert state.last_good_timestamp is not None
            self._hub.publish(
                name,
                Frame(
                    protocol.metrics_update(
                        name, state.seq, state.last_good_timestamp, data, stale=False
                    ),
                    topic=name,
                ),
            )
            return
        state.failures += 1
        self._health.record_failure(failure)
        # A rejected query is a configuration mistake (a topics file), not an outage.
        level = log.error if cause is FailureCause.QUERY_REJECTED else log.warning
        level("topic query failed", topic=name, cause=cause.value, error=failure)
        message = f"InfluxDB query for topic {name!r} failed: {failure}"
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
