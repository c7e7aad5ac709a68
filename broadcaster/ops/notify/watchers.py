"""The watchers: each turns what one part of the service reports into events, once per
transition (never once per tick or per sweep).

- :class:`DatabaseWatcher`: told every query and ping outcome (by ``SourceHealth``).
  up ──(``after_failures`` in a row)──► down: ``database_down``
  down ──(one success)──► up: ``database_recovered``, with how long since the first failure.
- :class:`HeartbeatWatcher`: told how many connections each heartbeat sweep closed.
  ok ──(more than ``threshold`` in one sweep)──► failing: ``heartbeat_failures``
  failing ──(a sweep at or under it)──► ok (re-armed, nothing sent).
- :class:`ClientsGoneWatcher`: a task with a deadline, armed when the last client leaves and
  pushed back whenever the last client leaves again; at the deadline, if there are still no
  clients, ``clients_gone``. It is not armed again until clients came and went.
- :class:`BrokerWatcher`: told each time the cluster's Redis link is made or lost (and each
  failed reconnection). up ──(lost)──► down: ``broker_down``; down ──(made)──► up:
  ``broker_recovered``, with how long it was down. Silent once the service is stopping (its
  own shutdown ends the link).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import trio

from broadcaster.ops.notify import events
from broadcaster.ops.notify.events import Event


class Notify(Protocol):
    """Where watchers send events: never waits (see ``Notifier.notify``)."""

    def notify(self, event: Event) -> None: ...


class DatabaseWatcher:
    """``database_down`` / ``database_recovered`` from the stream of query and ping outcomes."""

    def __init__(self, notifier: Notify, *, after_failures: int) -> None:
        self._notifier = notifier
        self._after_failures = after_failures
        self._down = False
        self._streak_started_at: float | None = None
        self._streak = 0

    def observe(self, error: str | None, consecutive_failures: int) -> None:
        """One outcome: ``error`` None for a success; ``consecutive_failures`` so far."""
        now = trio.current_time()
        if error is None:
            if self._down and self._streak_started_at is not None:
                down_s = now - self._streak_started_at
                self._notifier.notify(events.database_recovered(down_s, self._streak))
            self._down = False
            self._streak_started_at = None
            self._streak = 0
            return
        if self._streak_started_at is None:
            self._streak_started_at = now
        self._streak = consecutive_failures
        if not self._down and consecutive_failures >= self._after_failures:
            self._down = True
            self._notifier.notify(events.database_down(consecutive_failures, error))


class HeartbeatWatcher:
    """``heartbeat_failures`` when one sweep closes more than ``threshold`` connections."""

    def __init__(self, notifier: Notify, *, threshold: int, interval_s: float) -> None:
        self._notifier = notifier
        self._threshold = threshold
        self._interval_s = interval_s
        self._failing = False

    def swept(self, closed_for_silence: int) -> None:
        """One heartbeat sweep closed ``closed_for_silence`` connections."""
        failing = closed_for_silence > self._threshold
        if failing and not self._failing:
            self._notifier.notify(
                events.heartbeat_failures(closed_for_silence, self._threshold, self._interval_s)
            )
        self._failing = failing


class ClientsGoneWatcher:
    """``clients_gone`` after ``after_s`` without clients, once the service had some.

    :meth:`on_closed` is told of every closed connection with how many remain; ``clients_now``
    says how many there are when the deadline passes (a client that connected since and is
    still there means the service is reachable: nothing is sent).
    """

    def __init__(self, notifier: Notify, *, after_s: float, clients_now: Callable[[], int]) -> None:
        self._notifier = notifier
        self._after_s = after_s
        self._clients_now = clients_now
        self._emptied = trio.Event()
        self._deadline: trio.CancelScope | None = None

    def on_closed(self, remaining: int) -> None:
        """A connection closed; ``remaining`` are left. The last one leaving arms the deadline
        (or pushes it back when it is armed already)."""
        if remaining:
            return
        if self._deadline is not None:
            self._deadline.deadline = trio.current_time() + self._after_s
        else:
            self._emptied.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Wait for the last client to leave, then for the deadline; runs until cancelled."""
        task_status.started()
        while True:
            await self._emptied.wait()
            self._emptied = trio.Event()
            with trio.move_on_after(self._after_s) as self._deadline:
                await trio.sleep_forever()
            self._deadline = None
            if self._clients_now() == 0:
                self._notifier.notify(events.clients_gone(self._after_s))


class BrokerWatcher:
    """``broker_down`` / ``broker_recovered`` from the cluster broker's link changes."""

    def __init__(self, notifier: Notify, *, broker: str) -> None:
        self._notifier = notifier
        self._broker = broker
        self._down_since: float | None = None
        self.stopping = False

    def link_changed(self, error: str | None) -> None:
        """The link was made (``error`` None) or lost or not made again (``error``)."""
        if self.stopping:
            return
        now = trio.current_time()
        if error is None:
            if self._down_since is not None:
                self._notifier.notify(events.broker_recovered(self._broker, now - self._down_since))
            self._down_since = None
        elif self._down_since is None:
            self._down_since = now
            self._notifier.notify(events.broker_down(self._broker, error))
