"""The service: the parts built once, the nursery tree, and the shutdown sequence.

The nursery tree (the shape of hypercorn's ``worker_serve``)::

    root         the health prober (it answers /health until the HTTP server stops),
                 the Redis broker (``--redis-url``: it outlives the loop's last publication)
                 and, when run from the CLI, the signal watcher
    +- servers   the WebSocket server, the HTTP server (hypercorn); the grace deadline is
       |         set on this nursery's cancel scope
       +- background   the broadcast loop, the heartbeat sweeper, the stats logger, the
                       cluster presence (``--redis-url``)

Shutdown (first SIGTERM/SIGINT, or ``stop`` set):

1. stop accepting WebSocket connections, stop the broadcast loop (it finishes the ticks it
   claimed, so a node leaving a cluster costs the others no tick), heartbeats and stats;
   in a cluster, leave the node list;
2. send ``server_shutdown`` to every client, then close it with 1001;
3. wait up to the shutdown timeout for clients to finish their close handshake;
4. close whoever is left, stop the HTTP server, return (the CLI exits 0).

A second signal exits at once.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import httpx
import structlog
import trio

from broadcaster.auth.admin import AdminTokens
from broadcaster.auth.origins import OriginPolicy
from broadcaster.auth.startup import build_verifier
from broadcaster.broadcast.loop import BroadcastLoop
from broadcaster.broadcast.pop_topics import BUILTIN_TOPICS
from broadcaster.broadcast.topics import Topic, build_catalog
from broadcaster.cluster.local import default_node_id
from broadcaster.config import Settings
from broadcaster.containment import Containment
from broadcaster.hub import Hub
from broadcaster.ops.fd_limit import FdLimit, raise_fd_limit
from broadcaster.ops.gc_pacing import GcPacer
from broadcaster.ops.http import create_app
from broadcaster.ops.http_server import ContainedConfig, serve_http, serve_on_sockets
from broadcaster.ops.metrics import build_registry
from broadcaster.ops.notify import Notifications
from broadcaster.ops.stats import log_stats
from broadcaster.ops.views import log_connection_closed
from broadcaster.protocol import CloseCode
from broadcaster.reuse_port import bind_reuse_port
from broadcaster.sources.base import MetricsSource
from broadcaster.sources.health import SourceHealth
from broadcaster.sources.influxql import InfluxQLSource
from broadcaster.ws.heartbeat import sweep_heartbeats
from broadcaster.ws.policy import AuthPolicy, ConnectionPolicy, InputLimits, OutputLimits
from broadcaster.ws.server import HANDSHAKE_TIMEOUT_S, WebSocketEndpoint, serve_websockets
from broadcaster.ws.tls import server_context

if TYPE_CHECKING:  # imported when --redis-url is set: coredis takes a while to import
    from broadcaster.cluster.redis_broker import RedisBroker
    from broadcaster.cluster.registry import ClusterRegistry

log = structlog.get_logger("broadcaster.service")

HTTP_GRACE_S = 1.0
SHUTDOWN_REASON = "server shutting down"


@dataclass
class RunningService:
    """Handles to a started service, reported to whoever started it (tests, the CLI)."""

    websocket: WebSocketEndpoint
    http_url: str
    hub: Hub
    loop: BroadcastLoop
    health: SourceHealth


@dataclass(frozen=True)
class _Parts:
    """What the service is made of, built before anything runs."""

    settings: Settings
    catalog: Mapping[str, Topic]
    hub: Hub
    health: SourceHealth
    loop: BroadcastLoop
    notifications: Notifications
    auth: AuthPolicy | None = None  # --auth-mode jwt: the token verifier and its timeout
    tls: ssl.SSLContext | None = None  # --tls-cert-file: both servers' TLS context
    broker: RedisBroker | None = None  # --redis-url: the cluster's broker
    registry: ClusterRegistry | None = None  # --redis-url: this node's presence, the status


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
    config.ssl_handshake_timeout = HANDSHAKE_TIMEOUT_S  # hypercorn's default: 60 s
    return config


async def serve(
    settings: Settings,
    *,
    catalog: Mapping[str, Topic] | None = None,
    stop: trio.Event | None = None,
    handle_signals: bool = False,
    source: MetricsSource | None = None,
    task_status: trio.TaskStatus[RunningService] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the whole service until ``stop`` is set (or a signal arrives), then shut down.

    Args:
        catalog: the topics, as the CLI built and checked them; built here from the settings
            when not given (tests and the benchmark pass settings only).
        source: where topic values come from; by default InfluxQL at ``settings.influx_url``
            (tests and the benchmark pass an in-process one).

    Raises:
        ConfigError: the topics file or the default topics are invalid (before anything starts).
        OSError: a port cannot be bound.
    """
    if catalog is None:
        catalog = build_catalog(BUILTIN_TOPICS, settings.topics_file, settings.default_topics)
    _report_fd_limit(raise_fd_limit(), settings.max_connections)
    _warn_if_open_to_all(settings)
    with GcPacer() as gc_pacer:
        timeout = httpx.Timeout(settings.query_timeout_ms / 1000)
        async with httpx.AsyncClient(timeout=timeout) as client:
            source = source if source is not None else _influxql(settings, client)
            parts = _build(settings, catalog, source, gc_pacer, auth=_auth_policy(settings, client))
            # "stop or Event()" would ask an Event for its truth value, which trio refuses.
            await _run(
                parts, stop if stop is not None else trio.Event(), handle_signals, task_status
            )
    log.info(
        "service stopped",
        **parts.hub.counters.as_dict(),
        connection_errors=parts.hub.containment.counts(),
    )


def _influxql(settings: Settings, client: httpx.AsyncClient) -> InfluxQLSource:
    return InfluxQLSource(
        client,
        settings.influx_base_url,
        settings.influx_db,
        token=settings.influx_token,
        username=settings.influx_username,
        password=settings.influx_password,
    )


def _auth_policy(settings: Settings, client: httpx.AsyncClient) -> AuthPolicy | None:
    """The token verifier (JWKS fetched with the service's HTTP client); None without auth."""
    verifier = build_verifier(settings, client)
    return None if verifier is None else AuthPolicy(verifier, settings.auth_timeout_ms / 1000)


def _warn_if_open_to_all(settings: Settings) -> None:
    """Without authentication, binding beyond loopback lets anyone on the network subscribe."""
    exposed = [h for h in (settings.ws_host, settings.http_host) if not _is_loopback(h)]
    if settings.auth_mode == "none" and exposed:
        log.warning(
            "no authentication (--auth-mode none) on a non-loopback address: anyone on the "
            "network can subscribe to every topic",
            addresses=sorted(set(exposed)),
        )


def _is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or ``localhost``; any other name counts as reachable from outside."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _build(
    settings: Settings,
    catalog: Mapping[str, Topic],
    source: MetricsSource,
    gc_pacer: GcPacer,
    *,
    auth: AuthPolicy | None = None,
) -> _Parts:
    """The hub, the source's health and the broadcast loop, wired to each other."""
    interval_s = settings.broadcast_interval_ms / 1000
    health = SourceHealth(
        source, max_age_s=2 * interval_s, ping_timeout_s=settings.query_timeout_ms / 1000
    )
    hub = Hub(
        list(catalog),
        settings.default_topics,
        broadcast_interval_ms=settings.broadcast_interval_ms,
        max_connections=settings.max_connections,
        max_connections_per_ip=settings.max_connections_per_ip,
        max_connections_per_identity=settings.max_connections_per_identity,
        tenant_topics=[name for name, topic in catalog.items() if topic.is_tenant_topic],
        cluster=settings.cluster_name if settings.redis_url is not None else None,
        node_id=settings.node_id or default_node_id(),
    )
    hub.on_closed = log_connection_closed
    broker = None
    if settings.redis_url is not None:
        from broadcaster.cluster.redis_broker import RedisBroker

        broker = RedisBroker(
            settings.redis_url,
            cluster=settings.cluster_name,
            node_id=hub.node_id,
            interval_s=interval_s,
        )
    loop = BroadcastLoop(
        hub,
        source,
        catalog,
        health,
        interval_s=interval_s,
        query_timeout_s=settings.query_timeout_ms / 1000,
        tick_offset_s=settings.tick_offset_ms / 1000,
        after_tick=gc_pacer.after_tick,
        broker=broker,
    )
    notifications = Notifications(settings, hub, health)
    if broker is not None:
        broker.on_link = notifications.broker_link_changed
    return _Parts(
        settings,
        catalog,
        hub,
        health,
        loop,
        notifications,
        auth,
        _tls_context(settings),
        broker,
        None if broker is None else _registry(broker, hub),
    )


def _registry(broker: RedisBroker, hub: Hub) -> ClusterRegistry:
    from broadcaster.cluster.registry import ClusterRegistry

    return ClusterRegistry(broker, hub)


def _tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The one TLS context both servers use, or None without ``--tls-cert-file``.

    Raises:
        ConfigError: a certificate or key file is unreadable, invalid or mismatched.
    """
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    return server_context(settings.tls_cert_file, settings.tls_key_file)


async def _run(
    parts: _Parts,
    stop: trio.Event,
    handle_signals: bool,
    task_status: trio.TaskStatus[RunningService],
) -> None:
    """The nursery tree and the shutdown sequence (both drawn in the module docstring)."""
    settings, hub = parts.settings, parts.hub
    http_stop = trio.Event()
    stop_cause = _StopCause()
    async with trio.open_nursery() as root:
        if handle_signals:
            root.start_soon(_watch_signals, stop, stop_cause)
        await root.start(parts.health.serve_probes)
        if parts.broker is not None:  # stops last: the loop's last publications go through it
            await root.start(parts.broker.run)
        if parts.notifications.enabled:
            await root.start(parts.notifications.serve)
        async with trio.open_nursery() as servers:
            websocket, http_url = await _start_servers(servers, parts, http_stop)
            if parts.registry is not None:
                parts.registry.ws_url, parts.registry.http_url = websocket.url, http_url
            async with trio.open_nursery() as background:
                await _start_background(background, parts)
                log.info(
                    "service started",
                    websocket_url=websocket.url,
                    http_url=http_url,
                    topics=list(parts.catalog),
                    influx_url=settings.influx_base_url,
                    influx_db=settings.influx_db,
                )
                parts.notifications.service_started(websocket.url, http_url)
                task_status.started(
                    RunningService(websocket, http_url, hub, parts.loop, parts.health)
                )
                await stop.wait()
                # Shutdown, step 1: no new clients, no more ticks, heartbeats or stats.
                started = trio.current_time()
                websocket.stop_accepting()
                background.cancel_scope.cancel()
            if parts.registry is not None:  # the loop has finished the ticks it claimed
                await parts.registry.leave()
            # Steps 2 to 4: tell and close every client, forcing whoever is left.
            parts.notifications.service_stopping(stop_cause.signal, hub.tracked_count())
            await _close_clients(settings, hub, started)
            # Then the HTTP server finishes its requests, within a grace period.
            http_stop.set()
            servers.cancel_scope.deadline = trio.current_time() + HTTP_GRACE_S
        # The servers are done: notifications get a bounded time to go out (service_stopping
        # was queued at step 2); then the notifier, the health prober and the signal watcher
        # are no longer needed.
        await parts.notifications.finish()
        root.cancel_scope.cancel()


async def _start_servers(
    servers: trio.Nursery, parts: _Parts, http_stop: trio.Event
) -> tuple[WebSocketEndpoint, str]:
    """Start the WebSocket then the HTTP server, which links to it; return their addresses."""
    settings, hub = parts.settings, parts.hub
    websocket: WebSocketEndpoint = await servers.start(
        partial(serve_websockets, ssl_context=parts.tls, reuse_port=settings.reuse_port),
        hub,
        connection_policy(settings, hub, parts.auth),
        settings.ws_host,
        settings.ws_port,
    )
    registry = build_registry(hub, parts.health, parts.loop, parts.notifications.counts)
    admin_file = settings.admin_token_file
    app = create_app(
        hub,
        parts.health,
        registry,
        websocket_url=websocket.url,
        admin_tokens=None if admin_file is None else AdminTokens(admin_file),
        auth_required=parts.auth is not None,
        cluster=parts.registry,
    )
    config = _hypercorn_config(settings, hub.containment)
    config.ssl_context = parts.tls
    if settings.reuse_port:
        serve_on_sockets(config, await bind_reuse_port(settings.http_host, settings.http_port))
    binds: list[str] = await servers.start(
        partial(serve_http, app, config, shutdown_trigger=http_stop.wait)
    )
    return websocket, binds[0]


async def _start_background(background: trio.Nursery, parts: _Parts) -> None:
    """Start the tasks that stop first at shutdown: the broadcast loop, heartbeats, stats."""
    settings = parts.settings
    await background.start(parts.loop.run)
    if parts.registry is not None:
        await background.start(parts.registry.serve)
    await background.start(
        partial(
            sweep_heartbeats,
            parts.hub,
            interval_s=settings.heartbeat_interval_ms / 1000,
            connection_timeout_s=settings.connection_timeout_ms / 1000,
            on_sweep=parts.notifications.heartbeat_swept,
        )
    )
    await background.start(
        partial(log_stats, parts.hub, parts.health, interval_s=settings.stats_interval_ms / 1000)
    )


def connection_policy(
    settings: Settings, hub: Hub, auth: AuthPolicy | None = None
) -> ConnectionPolicy:
    """What every connection is built from: the limits from ``settings``, the Origin policy,
    ``auth`` (None: ``--auth-mode none``), and the hub's counters and containment so that a
    connection counts into the service-wide ones."""
    return ConnectionPolicy(
        output=OutputLimits(
            max_messages=settings.outbox_messages,
            max_bytes=settings.max_pending_output_bytes,
            stall_timeout_s=settings.send_stall_timeout_ms / 1000,
        ),
        input=input_limits(settings),
        counters=hub.counters,
        containment=hub.containment,
        origins=OriginPolicy(settings.allowed_origins),
        auth=auth,
    )


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


async def _close_clients(settings: Settings, hub: Hub, started: float) -> None:
    """Steps 2 to 4 of the shutdown sequence for WebSocket clients (see the module docstring).

    ``started`` is when the shutdown began, for the elapsed time in the log.
    """
    clients = hub.tracked_count()
    log.info("shutting down", clients=clients, timeout_ms=settings.shutdown_timeout_ms)
    hub.shutdown_all(SHUTDOWN_REASON, settings.reconnect_after_ms)
    with trio.move_on_after(settings.shutdown_timeout_ms / 1000):
        await hub.wait_until_empty()
    left = hub.tracked_count()
    if left:
        hub.abort_all(CloseCode.GOING_AWAY, SHUTDOWN_REASON)
    log.info(
        "clients closed",
        clients=clients,
        closed_cleanly=clients - left,
        forced=left,
        elapsed_ms=round((trio.current_time() - started) * 1000),
    )


@dataclass
class _StopCause:
    """Why the service stops, for the service_stopping notification."""

    signal: str | None = None  # the first signal's name; None: ``stop`` was set by the caller


async def _watch_signals(stop: trio.Event, cause: _StopCause) -> None:
    """First SIGTERM/SIGINT: graceful shutdown (its name recorded in ``cause``). Second: exit
    at once."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            name = signal.Signals(signum).name
            if not stop.is_set():
                log.info("signal received: shutting down", signal=name)
                cause.signal = name
                stop.set()
            else:
                log.warning("second signal: exiting at once", signal=name)
                os._exit(128 + signum)
