"""The one task that sends notifications, and the non-blocking door events come in by.

Whoever sees an event calls :meth:`Notifier.notify`, which never waits: it logs the event and
queues one delivery per destination (URL). Worker tasks take deliveries from the queue and
send each with Apprise, which is synchronous, in a worker thread::

    notify(event) ──► queue (QUEUE_CAPACITY deliveries) ──► SENDING_WORKERS tasks
       sync, O(1)       full: the OLDEST is dropped,          one attempt: a thread, at most
                        counted and logged                    SEND_ATTEMPT_TIMEOUT_S, then
                                                              abandoned; retries per RetryPolicy

Bounds (what a slow or dead receiver can hold up):

- ticks and fan-out: nothing; they only ever call ``notify``.
- threads: at most ``SENDING_WORKERS`` (a :class:`trio.CapacityLimiter`); an attempt that
  times out is abandoned and its thread runs on to Apprise's own socket timeouts, still
  holding its limiter token, so abandoned threads never pile up past the bound.
- shutdown: the service gives the queue ``SHUTDOWN_FLUSH_S`` to drain after the clients are
  closed (``service_stopping`` was queued when their closing began), then cancels; what was
  not sent by then is counted ``dropped`` and logged, never lost silently.

When the queue is full the oldest delivery is dropped rather than the new one: events are
transitions, and the newest says how things stand now (``database_recovered`` matters more
than the ``database_down`` before it).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from functools import partial

import apprise
import structlog
import trio

from broadcaster.ops.notify.counts import NotificationCounts, Outcome
from broadcaster.ops.notify.events import Event, Severity

log = structlog.get_logger("broadcaster.ops.notify")

QUEUE_CAPACITY = 64
"""Deliveries waiting to be sent; a storm of transitions beyond this drops the oldest."""
SENDING_WORKERS = 4
"""Deliveries in flight at once, and so Apprise threads alive at once (abandoned ones included)."""
SEND_ATTEMPT_TIMEOUT_S = 10.0
"""The longest one attempt is waited for; then it is abandoned and counts as failed."""
SHUTDOWN_FLUSH_S = 2.0
"""The longest the shutdown waits, after the clients are closed, for queued notifications."""

_NOTIFY_TYPES = {
    Severity.INFO: apprise.NotifyType.INFO,
    Severity.SUCCESS: apprise.NotifyType.SUCCESS,
    Severity.WARNING: apprise.NotifyType.WARNING,
    Severity.FAILURE: apprise.NotifyType.FAILURE,
}


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When a failed delivery is tried again. With the defaults::

        attempt:           1     2          3          4
        waited before:     -     1-1.5 s    2-3 s      4-6 s      then: failed, logged, counted

    The wait before attempt k+1 is ``min(max_delay_s, base_delay_s * 2**(k-1))`` plus
    ``uniform(0, jitter_ratio * that)``, so nodes that lost the same receiver do not retry in step.
    """

    attempts: int = 4
    base_delay_s: float = 1.0
    max_delay_s: float = 30.0
    jitter_ratio: float = 0.5

    def delay_s(self, failed_attempt: int, rng: random.Random) -> float:
        """The wait after attempt ``failed_attempt`` (1-based) failed."""
        delay = min(self.max_delay_s, self.base_delay_s * 2.0 ** (failed_attempt - 1))
        return delay + rng.uniform(0, self.jitter_ratio * delay)


@dataclass(frozen=True, slots=True)
class Destination:
    """One notification URL, and how it may be shown in logs (secrets masked by Apprise)."""

    url: str
    shown: str

    @classmethod
    def parse(cls, url: str) -> Destination:
        """Raises ValueError if Apprise cannot send to ``url`` (config.py checked it before)."""
        plugin = apprise.Apprise.instantiate(url, suppress_exceptions=True)
        if plugin is None:
            raise ValueError(f"not an Apprise URL: {url.split('://', 1)[0]}://...")
        shown = str(plugin.url(privacy=True))  # type: ignore[no-untyped-call]
        return cls(url, shown.split("?", 1)[0])


@dataclass(frozen=True, slots=True)
class _Delivery:
    event: Event
    destination: Destination


class Notifier:
    """Sends events to every destination; :meth:`serve` must run for anything to be sent."""

    def __init__(
        self,
        urls: tuple[str, ...],
        *,
        retry: RetryPolicy | None = None,
        attempt_timeout_s: float = SEND_ATTEMPT_TIMEOUT_S,
        rng: random.Random | None = None,
        node: str | None = None,
    ) -> None:
        """``node``: the sending node's id in every event (default: ``hostname:pid``)."""
        self.counts = NotificationCounts()
        self._node = node
        self._destinations = tuple(Destination.parse(url) for url in urls)
        self._retry = retry or RetryPolicy()
        self._attempt_timeout_s = attempt_timeout_s
        self._rng = rng or random.Random()
        self._limiter = trio.CapacityLimiter(SENDING_WORKERS)
        self._queue, self._inbox = trio.open_memory_channel[_Delivery](QUEUE_CAPACITY)
        self._finished = trio.Event()

    @property
    def enabled(self) -> bool:
        """Whether there is anywhere to send to."""
        return bool(self._destinations)

    def notify(self, event: Event) -> None:
        """Queue ``event`` for every destination; never waits, never raises for a full queue.

        Without destinations it does nothing at all (not even log).
        """
        if not self._destinations:
            return
        if self._node is not None:
            event = replace(event, node=self._node)
        log.info("notification", notification=event.title)
        for destination in self._destinations:
            self._enqueue(_Delivery(event, destination))

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Send what is queued until :meth:`finish` is called and the queue is drained, or
        until cancelled (then whatever is left is counted ``dropped``)."""
        try:
            async with trio.open_nursery() as workers:
                for _ in range(SENDING_WORKERS):
                    workers.start_soon(self._work)
                task_status.started()
        finally:
            self._drop_queued("service stopped before it was sent")
            self._finished.set()

    async def finish(self) -> None:
        """Take no more events, and return once every queued one was sent or given up.

        The caller bounds the wait (the service: ``SHUTDOWN_FLUSH_S``).
        """
        self._queue.close()
        await self._finished.wait()

    def _enqueue(self, delivery: _Delivery) -> None:
        try:
            self._queue.send_nowait(delivery)
        except trio.WouldBlock:
            # Full, so no worker is waiting: the oldest can be taken out here.
            self._dropped(self._inbox.receive_nowait(), "queue full")
            self._queue.send_nowait(delivery)
        except trio.ClosedResourceError:
            self._dropped(delivery, "service stopping")

    async def _work(self) -> None:
        async for delivery in self._inbox:
            try:
                await self._deliver(delivery)
            except trio.Cancelled:
                self._dropped(delivery, "service stopped while it was being sent")
                raise

    async def _deliver(self, delivery: _Delivery) -> None:
        """Attempt, wait, attempt again, per the retry policy; then count the outcome."""
        event, destination = delivery.event, delivery.destination
        error = "not attempted"
        for attempt in range(1, self._retry.attempts + 1):
            error = await self._attempt(delivery)
            if not error:
                self.counts.add(event.name, Outcome.SENT)
                log.info(
                    "notification sent",
                    notification_event=event.name,
                    destination=destination.shown,
                    attempts=attempt,
                )
                return
            if attempt < self._retry.attempts:
                delay_s = self._retry.delay_s(attempt, self._rng)
                log.warning(
                    "notification attempt failed; retrying",
                    notification_event=event.name,
                    destination=destination.shown,
                    attempt=attempt,
                    error=error,
                    retry_in_ms=round(delay_s * 1000),
                )
                await trio.sleep(delay_s)
        self.counts.add(event.name, Outcome.FAILED)
        log.error(
            "notification failed",
            notification=event.title,
            destination=destination.shown,
            attempts=self._retry.attempts,
            error=error,
        )

    async def _attempt(self, delivery: _Delivery) -> str:
        """One send in a worker thread: "" if it was accepted, else why not."""
        send = partial(_send_blocking, delivery.destination.url, delivery.event)
        with trio.move_on_after(self._attempt_timeout_s):
            return await trio.to_thread.run_sync(
                send, limiter=self._limiter, abandon_on_cancel=True
            )
        return f"no answer within {self._attempt_timeout_s:g} s (attempt abandoned)"

    def _drop_queued(self, reason: str) -> None:
        while True:
            try:
                delivery = self._inbox.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                return
            self._dropped(delivery, reason)

    def _dropped(self, delivery: _Delivery, reason: str) -> None:
        self.counts.add(delivery.event.name, Outcome.DROPPED)
        log.error(
            "notification dropped",
            notification=delivery.event.title,
            destination=delivery.destination.shown,
            reason=reason,
        )


def _send_blocking(url: str, event: Event) -> str:
    """Send ``event`` to ``url`` with Apprise (in a worker thread): "" on success, else why not.

    A fresh Apprise object per attempt: nothing is shared between threads.
    """
    try:
        sender = apprise.Apprise()
        sender.add(url)
        accepted = sender.notify(
            title=event.title,
            body=event.body,
            notify_type=_NOTIFY_TYPES[event.severity],
            body_format=apprise.NotifyFormat.TEXT,
        )
    except Exception as exc:  # a plugin's bug must not end the sending task
        return f"{type(exc).__name__}: {exc}"
    return "" if accepted else "the receiver refused it or could not be reached (see apprise log)"
