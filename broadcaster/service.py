"""The service: one nursery holding every task, and the shutdown sequence.

Tasks in the nursery: the WebSocket server, the HTTP server (hypercorn), the health prober
(pings InfluxDB when ``/health`` asks), the broadcast loop, the heartbeat sweeper, the stats
logger and, when run from the CLI, the signal watcher.

Shutdown (first SIGTERM/SIGINT, or ``stop`` set):

1. stop accepting WebSocket connections, stop the broadcast loop, heartbeats and stats;
2. send ``server_shutdown`` to every client, then close it with 1001;
3. wait up to the shutdown timeout for clients to finish their close handshake;
4. close whoever is left, stop the HTTP server, return (the CLI exits 0).

A second signal exits at once.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import httpx
import structlog
import trio

from broadcaster.broadcast.loop import Broadcaster
from broadcaster.broadcast.pop_topics import BUILTIN_TOPICS
from broadcaster.broadcast.topics import build_catalog
from broadcaster.config import Settings
from broadcaster.containment import Containment
from broadcaster.hub import Hub
from broadcaster.ops.fd_limit import FdLimit, raise_fd_limit
from broadcaster.ops.gc_pacing import GcPacer
from broadcaster.ops.http import create_app
from broadcaster.ops.http_server import ContainedConfig, serve_http
from broadcaster.ops.metrics import build_registry
from broadcaster.ops.stats import log_stats
from broadcaster.protocol import CloseCode
from broadcaster.sources.base import MetricsSource
from broadcaster.sources.health import SourceHealth
from broadcaster.sources.influxql import InfluxQLSource
from broadcaster.ws.connection import InputLimits, OutputLimits
from broadcaster.ws.heartbeat import sweep_heartbeats
from broadcaster.ws.server import WebSocketEndpoint, serve_websockets

log = structlog.get_logger("broadcaster.service")

HTTP_GRACE_S = 1.0
SHUTDOWN_REASON = "server shutting down"


@dataclass
class RunningService:
    """Handles to a started service, reported to whoever started it (tests, the CLI)."""

    websocket: WebSocketEndpoint
    http_url: str
    hub: Hub
    broadcaster: Broadcaster
    health: SourceHealth


class _TaskSet:
    """Tasks run in the owner's nursery, each in a cancel scope, so they can be stopped and
    awaited as a set while the nursery's other tasks go on."""

    def __init__(self) -> None:
        self._scopes: list[trio.CancelScope] = []
        self._running = 0
        self._all_done = trio.Event()

    async def run(
        self, task: Callable[..., Awaitable[Any]], *, task_status: trio.TaskStatus[Any]
    ) -> None:
        scope = trio.CancelScope()
        self._scopes.append(scope)
        self._running += 1
        try:
            with scope:
                await task(task_status=task_status)
        finally:
            self._running -= 1
            if not self._running:
                self._all_done.set()

    def stop(self) -> None:
        for scope in self._scopes:
            scope.cancel()

    async def wait(self) -> None:
        if self._running:
            await self._all_done.wait()


def input_limits(settings: Settings) -> InputLimits:
    """What one client may send, from the settings."""
    return InputLimits(
        max_message_bytes=settings.max_message_bytes,
        max_message_fragments=settings.max_message_fragments,
        messages_per_s=settings.client_messages_per_s,
        message_burst=settings.client_message_burst,
        bytes_per_s=settings.client_bytes_per_s,
        frames_per_s=settings.client_frames_per_s,
    )


def _hypercorn_config(settings: Settings, containment: Containment) -> ContainedConfig:
    config = ContainedConfig()
    config.containment = containment
    config.bind = [f"{settings.http_host}:{settings.http_port}"]
    config.accesslog = None
    # A Logger, not a path: hypercorn then adds no handler of its own (see broadcaster.logs).
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = HTTP_GRACE_S
    return config


async def serve(
    settings: Settings,
    *,
    stop: trio.Event | None = None,
    handle_signals: bool = False,
    source: MetricsSource | None = None,
    task_status: trio.TaskStatus[RunningService] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the whole service until ``stop`` is set (or a signal arrives), then shut down.

    Args:
        source: where topic values come from; by default InfluxQL at ``settings.influx_url``
            (tests and the benchmark pass an in-process one).

    Raises:
        ConfigError: the topics file or the default topics are invalid (before anything starts).
        OSError: a port cannot be bound.
    """
    _report_fd_limit(raise_fd_limit(), settings.max_connections)
    with GcPacer() as gc_pacer:
        await _serve(settings, stop or trio.Event(), handle_signals, source, gc_pacer, task_status)


async def _serve(
    settings: Settings,
    stop: trio.Event,
    handle_signals: bool,
    source: MetricsSource | None,
    gc_pacer: GcPacer,
    task_status: trio.TaskStatus[RunningService],
) -> None:
    """The service itself, inside the process-wide settings that ``serve`` makes."""
    catalog = build_catalog(BUILTIN_TOPICS, settings.topics_file, settings.default_topics)
    timeout = httpx.Timeout(settings.query_timeout_ms / 1000)
    async with httpx.AsyncClient(timeout=timeout) as client:
        source = source or InfluxQLSource(
            client,
            settings.influx_base_url,
            settings.influx_db,
            token=settings.influx_token,
            username=settings.influx_username,
            password=settings.influx_password,
        )
        interval_s = settings.broadcast_interval_ms / 1000
        health = SourceHealth(
            source, max_age_s=2 * interval_s, ping_timeout_s=settings.query_timeout_ms / 1000
        )
        hub = Hub(
            list(catalog),
            settings.default_topics,
            broadcast_interval_ms=settings.broadcast_interval_ms,
            max_connections=settings.max_connections,
            output_limits=OutputLimits(
                max_messages=settings.outbox_messages,
                max_bytes=settings.max_pending_output_bytes,
                stall_timeout_s=settings.send_stall_timeout_ms / 1000,
            ),
            input_limits=input_limits(settings),
        )
        broadcaster = Broadcaster(
            hub,
            source,
            catalog,
            health,
            interval_s=interval_s,
            query_timeout_s=settings.query_timeout_ms / 1000,
            after_tick=gc_pacer.after_tick,
        )
        http_stop = trio.Event()
        servers, background = _TaskSet(), _TaskSet()
        async with trio.open_nursery() as nursery:
            if handle_signals:
                nursery.start_soon(_watch_signals, stop)
            websocket: WebSocketEndpoint = await nursery.start(
                servers.run,
                partial(serve_websockets, hub, settings.ws_host, settings.ws_port),
            )
            # Before the HTTP server, which asks it for pings, and outside the task sets: it
            # serves /health until the HTTP server stops, and is cancelled with the nursery.
            await nursery.start(health.serve_probes)
            app = create_app(
                hub, health, build_registry(hub, health, broadcaster), websocket_url=websocket.url
            )
            binds: list[str] = await nursery.start(
                servers.run,
                partial(
                    serve_http,
                    app,
                    _hypercorn_config(settings, hub.containment),
                    shutdown_trigger=http_stop.wait,
                ),
            )
            await nursery.start(background.run, broadcaster.run)
            await nursery.start(
                background.run,
                partial(
                    sweep_heartbeats,
                    hub,
                    interval_s=settings.heartbeat_interval_ms / 1000,
                    connection_timeout_s=settings.connection_timeout_ms / 1000,
                ),
            )
            await nursery.start(
                background.run,
                partial(log_stats, hub, health, interval_s=settings.stats_interval_ms / 1000),
            )
            log.info(
                "service started",
                websocket_url=websocket.url,
                http_url=binds[0],
                topics=list(catalog),
                influx_url=settings.influx_base_url,
                influx_db=settings.influx_db,
            )
            task_status.started(RunningService(websocket, binds[0], hub, broadcaster, health))
            await stop.wait()
            await _shut_down(settings, hub, websocket, background)
            http_stop.set()
            with trio.move_on_after(HTTP_GRACE_S):
                await servers.wait()
            nursery.cancel_scope.cancel()
    log.info("service stopped", **hub.totals.as_dict())


def _report_fd_limit(limit: FdLimit, max_connections: int) -> None:
    fields = {
        "soft_limit_before": limit.before,
        "soft_limit": limit.soft,
        "hard_limit": limit.hard,
        "connection_capacity": limit.connection_capacity,
        "max_connections": max_connections,
    }
    if limit.connection_capacity < max_connections:
        log.warning(
            "open-file limit leaves room for fewer connections than --max-connections", **fields
        )
    else:
        log.info("open-file limit", **fields)


async def _shut_down(
    settings: Settings, hub: Hub, websocket: WebSocketEndpoint, background: _TaskSet
) -> None:
    """Steps 1 to 3 of the shutdown sequence (see the module docstring)."""
    started = trio.current_time()
    websocket.stop_accepting()
    background.stop()
    clients = len(hub.connections)
    log.info("shutting down", clients=clients, timeout_ms=settings.shutdown_timeout_ms)
    hub.shutdown_all(SHUTDOWN_REASON, settings.reconnect_after_ms)
    with trio.move_on_after(settings.shutdown_timeout_ms / 1000):
        await hub.wait_until_empty()
    left = len(hub.connections)
    if left:
        hub.abort_all(CloseCode.GOING_AWAY, SHUTDOWN_REASON)
    log.info(
        "clients closed",
        clients=clients,
        closed_cleanly=clients - left,
        forced=left,
        elapsed_ms=round((trio.current_time() - started) * 1000),
    )


async def _watch_signals(stop: trio.Event) -> None:
    """First SIGTERM/SIGINT: graceful shutdown. Second: exit at once."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            name = signal.Signals(signum).name
            if not stop.is_set():
                log.info("signal received: shutting down", signal=name)
                stop.set()
            else:
                log.warning("second signal: exiting at once", signal=name)
                os._exit(128 + signum)
