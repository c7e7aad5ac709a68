"""One refresh of a channel, the pipeline of the broadcast loop (see :mod:`broadcaster.
broadcast.loop`)::

    claim   -> the lease and the next seq (another node won: stop here, it publishes)
    query (+ shape) -> outcome: Value | Failure(cause, text)
    encode  -> outcome: Update (the frame) | Failure
    record  -> topic state, source health, the log
    publish -> through the broker, fenced on seq; every node (this one too) delivers it

and the broker reads that spare a query: a first subscriber's channel whose last value in
the cluster is fresh, a window taken from the cluster instead of read whole.

Whatever a channel's data makes go wrong ends as that channel's failure, never the loop's
nor another channel's.
"""

from __future__ import annotations

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
    internal_failure,
    log_fields,
    stale_copy,
)
from broadcaster.broadcast.state import ChannelStates, TopicState
from broadcaster.broadcast.topics import Topic
from broadcaster.broadcast.window_channel import WindowChannel, encode_window, window_publication
from broadcaster.channels import Channel
from broadcaster.cluster.broker import Broker, BrokerUnavailable, Claim, LastValue, Publication
from broadcaster.cluster.local import LocalBroker
from broadcaster.errors import SourceError, SourceResponseError
from broadcaster.hub import Hub
from broadcaster.protocol import ErrorCode, FailureCause
from broadcaster.sources.base import MetricsSource
from broadcaster.sources.health import SourceHealth

log = structlog.get_logger("broadcaster.broadcast.loop")

BROKER_TIMEOUT_S = 1.0
"""The longest one broker call (claim, publish, last value) may take before the loop serves
its own subscribers alone: well under a tick, so a hung Redis costs no tick."""


class ChannelRefresher:
    """Refreshes channels for the broadcast loop, which owns the states it reads and writes
    (``channels``, ``states``) and hands publications to subscribers (``deliver``).

    ``broker`` is the cluster's, or ``fallback`` itself standalone; ``fallback`` serves this
    node alone while the cluster's broker is unreachable.
    """

    def __init__(
        self,
        hub: Hub,
        source: MetricsSource,
        topics: Mapping[str, Topic],
        health: SourceHealth,
        *,
        broker: Broker,
        fallback: LocalBroker,
        channels: ChannelStates,
        states: dict[str, TopicState],
        deliver: Callable[[Publication], bool],
        interval_s: float,
        query_timeout_s: float,
    ) -> None:
        self._hub = hub
        self._source = source
        self._topics = topics
        self._health = health
        self._broker = broker
        self._fallback = fallback
        self._clustered = broker is not fallback
        self._channels = channels
        self._states = states
        self._deliver = deliver
        self._interval_s = interval_s
        self._query_timeout_s = query_timeout_s

    async def delivered_last_value(self, channel: Channel) -> bool:
        """In a cluster, deliver the broker's last value of ``channel`` if it is from the
        last interval (no query needed); whether it was."""
        last = await self._cluster_last_value(channel)
        if last is None or last.age_s >= self._interval_s or last.publication.update is None:
            return False
        return self._deliver(last.publication)

    async def _cluster_last_value(self, channel: Channel) -> LastValue | None:
        """The cluster's last value of ``channel``; None standalone, while Redis is away, or
        if it has none."""
        if not self._clustered or self._broker.mode != "cluster":
            return None
        try:
            with trio.fail_after(BROKER_TIMEOUT_S):
                return await self._broker.last_value(channel)
        except (BrokerUnavailable, trio.TooSlowError):
            return None

    async def refresh(self, channel: Channel, tick_id: int | None = None) -> None:
        """Claim ``channel`` for tick ``tick_id`` (None: an immediate refresh); if this node
        wins, query it under the timeout and publish its value, or the failure.

        Whatever goes wrong here ends this channel's refresh, never the loop or another
        channel: a failure is reported to the channel's subscribers and the loop goes on. A
        claim (in a cluster) is finished even while the service stops, within the query and
        broker timeouts, so that a node leaving the cluster costs the others no tick.
        """
        async with self._channels.of(channel).refreshing:
            await self._claim_and_refresh(channel, tick_id)

    async def _claim_and_refresh(self, channel: Channel, tick_id: int | None) -> None:
        deadline = trio.current_time() + self._query_timeout_s + 4 * BROKER_TIMEOUT_S
        with trio.CancelScope(shield=self._clustered, deadline=deadline):
            window = self._channels.of(channel).window
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
        at_least = self._channels.of(channel).seq
        claim = Claim(self._fallback.next_seq(channel, at_least), self._fallback.epoch)
        return claim, self._fallback

    async def _query_and_publish(self, channel: Channel, claim: Claim, broker: Broker) -> None:
        name = channel.topic
        topic_state = self._states[name]
        window = self._channels.of(channel).window
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
        state = self._channels.of(channel)
        if state.last_update is not None:
            return
        last = await self._cluster_last_value(channel)
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
        self._states[channel.topic].failures += 1
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
        state = self._channels.get(channel)
        last = None if state is None else state.last_update
        stale = None if last is None else stale_copy(last, claim.seq, claim.epoch)
        as_of = None if state is None else state.as_of_unix_s
        return Publication(channel, claim.seq, claim.epoch, error, stale, as_of)

    async def _took_window_from_broker(self, channel: Channel, window: WindowChannel) -> bool:
        """In a cluster, take the channel's whole window from the broker's last value (kept
        with every window publication) and hand it to this node's subscribers; whether it is
        from the last interval (then no query is needed for a new subscriber)."""
        last = await self._cluster_last_value(channel)
        if last is None or last.publication.whole is None:
            return False
        kept, state = last.publication, self._channels.of(channel)
        fresh = last.age_s < self._interval_s
        if window.position == (kept.epoch, kept.seq):
            return fresh
        if kept.epoch == state.epoch and kept.seq < state.seq:
            return False  # older than what this node delivered since
        whole = Publication(channel, kept.seq, kept.epoch, None, kept.whole, kept.as_of_unix_s)
        try:
            window.absorb(whole)
        except Exception:  # another node's frame (or our bug) breaks this channel only
            log.exception("the cluster's window could not be loaded", **log_fields(channel))
            return False
        state.seq, state.epoch = kept.seq, kept.epoch
        self._states[channel.topic].seq = max(self._states[channel.topic].seq, kept.seq)
        frame = window.whole_frame(channel.topic, kept.seq, epoch=kept.epoch)
        if frame is not None:
            state.latest = (frame, trio.current_time())
            self._hub.publish(channel, frame)
        return fresh
