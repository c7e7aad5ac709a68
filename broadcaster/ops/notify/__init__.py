"""Notifications: operators are told of trouble (and of starts and stops) through Apprise.

- ``events``: the event names (a contract: routing rules match them), titles and bodies.
- ``watchers``: turn what the parts report (the database, heartbeats, clients, the
  cluster broker's link) into events, once per transition.
- ``sender``: the non-blocking ``notify`` and the task that sends, retries and gives up.
- ``counts``: ``broadcaster_notifications_total{event,outcome}``.

:class:`Notifications` wires them to the service's parts; with no ``--notify-urls`` it hooks
into nothing and starts no task.
"""

from __future__ import annotations

import structlog
import trio

from broadcaster.config import Settings
from broadcaster.hub import Hub
from broadcaster.ops.notify import events
from broadcaster.ops.notify.counts import NotificationCounts
from broadcaster.ops.notify.sender import SHUTDOWN_FLUSH_S, Notifier
from broadcaster.ops.notify.watchers import (
    BrokerWatcher,
    ClientsGoneWatcher,
    DatabaseWatcher,
    HeartbeatWatcher,
)
from broadcaster.sources.health import SourceHealth
from broadcaster.ws.connection import Connection

log = structlog.get_logger("broadcaster.ops.notify")


class Notifications:
    """The notifier and its watchers, hooked into the hub, the source health and heartbeats.

    The service runs :meth:`serve` (only when :attr:`enabled`), calls :meth:`service_started`
    and :meth:`service_stopping`, passes :meth:`heartbeat_swept` to the heartbeat sweeper and
    awaits :meth:`finish` at the end of its shutdown.
    """

    def __init__(self, settings: Settings, hub: Hub, health: SourceHealth) -> None:
        self.notifier = Notifier(settings.notify_urls, node=hub.node_id)
        self._heartbeat = HeartbeatWatcher(
            self.notifier,
            threshold=settings.notify_heartbeat_failures,
            interval_s=settings.heartbeat_interval_ms / 1000,
        )
        self._clients_gone = ClientsGoneWatcher(
            self.notifier,
            after_s=settings.notify_no_clients_after_ms / 1000,
            clients_now=hub.tracked_count,
        )
        self._broker = BrokerWatcher(self.notifier, broker=f"redis ({settings.cluster_name})")
        if not self.enabled:
            return
        health.on_outcome = DatabaseWatcher(
            self.notifier, after_failures=settings.notify_after_failures
        ).observe
        log_closed = hub.on_closed

        def on_closed(connection: Connection, remaining: int) -> None:
            log_closed(connection, remaining)
            self._clients_gone.on_closed(remaining)

        hub.on_closed = on_closed

    @property
    def enabled(self) -> bool:
        """Whether any notification URL was given."""
        return self.notifier.enabled

    @property
    def counts(self) -> NotificationCounts:
        """What became of the notifications (a Prometheus collector)."""
        return self.notifier.counts

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The sender and the clients-gone deadline; run until cancelled."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.notifier.serve)
            await nursery.start(self._clients_gone.run)
            task_status.started()

    def heartbeat_swept(self, closed_for_silence: int) -> None:
        """For the heartbeat sweeper: one sweep closed ``closed_for_silence`` connections."""
        self._heartbeat.swept(closed_for_silence)

    def service_started(self, websocket_url: str, http_url: str) -> None:
        """The servers accept connections."""
        self.notifier.notify(events.service_started(websocket_url, http_url))

    def broker_link_changed(self, error: str | None) -> None:
        """For the cluster's broker: its link was made (None) or lost (why)."""
        if self.enabled:
            self._broker.link_changed(error)

    def service_stopping(self, signal: str | None, clients: int) -> None:
        """Shutdown began (``signal``: its cause, None when stopped by the caller)."""
        self._broker.stopping = True
        self.notifier.notify(events.service_stopping(signal, clients))

    async def finish(self) -> None:
        """Give queued notifications up to ``SHUTDOWN_FLUSH_S`` to be sent; the service then
        cancels whatever is left (counted and logged as dropped)."""
        if not self.enabled:
            return
        with trio.move_on_after(SHUTDOWN_FLUSH_S) as scope:
            await self.notifier.finish()
        if scope.cancelled_caught:
            log.warning("notifications still unsent at shutdown", waited_s=SHUTDOWN_FLUSH_S)
