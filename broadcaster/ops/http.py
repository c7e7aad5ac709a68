"""The HTTP app (quart-trio): WebSocket status, health, Prometheus metrics, and the live
dashboard (``/``, ``/static/...``, ``/api/client-config``).

The dashboard's files live in ``broadcaster/static`` inside the package, so they ship in the
wheel. The page connects to the WebSocket server, which listens on another port: it asks
``/api/client-config`` for the URL, built from the host name the browser used to reach this
app, so the page also works when opened from another machine.

With ``--admin-token-file``, the operator views that describe clients (the status API and
/metrics) need ``Authorization: Bearer <admin token>``; /health stays public and tells counts
only, never a client's address or identity.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol
from urllib.parse import urlsplit

import structlog
import trio
from hypercorn.typing import (
    ASGIReceiveCallable,
    ASGISendCallable,
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
    Scope,
)
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from quart import Response, abort, request, send_from_directory
from quart_trio import QuartTrio

from broadcaster.cluster.broker import BrokerUnavailable
from broadcaster.counters import COUNTERS
from broadcaster.host_header import is_valid_host
from broadcaster.hub import Hub, HubSnapshot
from broadcaster.ops.metrics import render
from broadcaster.ops.views import connection_view
from broadcaster.protocol import iso_from_unix_ms, iso_now
from broadcaster.sources.health import SourceHealth

log = structlog.get_logger("broadcaster.ops.http")

STATIC_DIR = Path(__file__).parent.parent / "static"  # broadcaster/static, inside the wheel
# Explicit, not mimetypes: Python 3.11 without /etc/mime.types says application/javascript.
# Quart adds "; charset=utf-8" to text types.
CONTENT_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".ts": "text/plain",  # broadcaster-client.d.ts, the client's TypeScript declarations
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}
# Longer names cannot be a file here, and would make the OS raise ENAMETOOLONG (a 500).
MAX_STATIC_NAME_BYTES = 255
# What a host name usable in the dashboard's WebSocket URL looks like (names, IPv4, IPv6
# without brackets); a valid Host header may still hold another (``%41``, ``!``).
_HOST_NAME = re.compile(r"[A-Za-z0-9._:-]{1,253}")


class _App(QuartTrio):
    """QuartTrio that logs a route's unexpected error through structlog, so that the JSON log
    line carries the traceback (Quart's own line, through the standard library, lost it)."""

    def log_exception(
        self,
        exception_info: tuple[type, BaseException, TracebackType] | tuple[None, None, None],
    ) -> None:
        log.error(
            "HTTP request failed",
            method=request.method,
            path=request.path,
            exc_info=exception_info,
        )


_AsgiApp = Callable[[Scope, ASGIReceiveCallable, ASGISendCallable], Awaitable[None]]


class _RefuseInvalidHost:
    """ASGI middleware: a request with an invalid ``Host`` gets 400 before the framework reads
    it (RFC 9112 3.2). Checked here, not in a route hook, because Werkzeug's IDNA codec raises
    on some hosts (a label over 63 characters) while building the request: a 500."""

    def __init__(self, app: _AsgiApp) -> None:
        self._app = app

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] == "http" and not all(
            # RFC 9112 3.2: a request without an authority sends an empty Host.
            is_valid_host(value) or not value
            for name, value in scope["headers"]
            if name.lower() == b"host"
        ):
            body = b"invalid Host header\n"
            start: HTTPResponseStartEvent = {
                "type": "http.response.start",
                "status": 400,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", b"%d" % len(body)),
                ],
            }
            await send(start)
            await send(HTTPResponseBodyEvent(type="http.response.body", body=body, more_body=False))
            return
        await self._app(scope, receive, send)


class ClusterView(Protocol):
    """The cluster as the HTTP app shows it (``broadcaster.cluster.registry.ClusterRegistry``)."""

    def health(self) -> dict[str, Any]: ...

    async def status(self) -> dict[str, Any]: ...


class AdminCheck(Protocol):
    """Whether a request's Authorization value holds an admin token (:class:`AdminTokens`)."""

    def check(self, authorization: str | None) -> bool: ...


def create_app(
    hub: Hub,
    health: SourceHealth,
    registry: CollectorRegistry,
    *,
    websocket_url: str,
    admin_tokens: AdminCheck | None = None,
    auth_required: bool = False,
    cluster: ClusterView | None = None,
) -> QuartTrio:
    """Build the app; it reads the hub and the health (``/health`` may ask for a ping).

    Args:
        websocket_url: the WebSocket server's URL as bound (``WebSocketEndpoint.url``); its
            port and path tell the dashboard where to connect.
        admin_tokens: when given, the status API and /metrics answer 401 without one.
        auth_required: ``--auth-mode jwt``: /api/client-config says ``authRequired`` so that
            the dashboard asks for a token at once.
        cluster: with ``--redis-url``: /health tells Redis's state and
            /api/cluster/status lists the live nodes (404 standalone).
    """
    app = _App("broadcaster", static_folder=None)
    app.asgi_app = _RefuseInvalidHost(app.asgi_app)  # type: ignore[method-assign]
    # Otherwise "/static//etc/passwd" is redirected (308) to "/static/etc/passwd": answer 404.
    app.url_map.merge_slashes = False
    websocket = urlsplit(websocket_url)
    websocket_port = websocket.port
    websocket_path = websocket.path or "/"

    @app.before_request
    async def refuse_bad_requests() -> None:
        # No route takes content; a body on GET is at best ignored, at worst a smuggling try.
        if request.method in ("GET", "HEAD") and (
            request.content_length or "Transfer-Encoding" in request.headers
        ):
            abort(400, "GET and HEAD requests carry no content here")

    async def send_static(file_name: str) -> Response:
        content_type = CONTENT_TYPES.get(Path(file_name).suffix)
        if content_type is None or len(file_name.encode(errors="replace")) > MAX_STATIC_NAME_BYTES:
            abort(404)
        response = await send_from_directory(STATIC_DIR, file_name, mimetype=content_type)
        response.cache_control.no_cache = True  # revalidate (ETag): a new version shows at once
        response.headers["X-Content-Type-Options"] = "nosniff"
        # Browsers load module scripts with CORS: without this, a page from another origin
        # cannot `import` /static/broadcaster-client.js. The files are public and the same
        # for everyone, so any origin may read them. Only static files: the /api/ answers
        # describe this service's connections and are left to the same origin.
        response.headers["Access-Control-Allow-Origin"] = "*"
        return response

    @app.get("/")
    async def dashboard() -> Response:
        return await send_static("index.html")

    @app.get("/static/<path:file_name>")
    async def static_file(file_name: str) -> Response:
        return await send_static(file_name)

    @app.get("/api/client-config")
    async def client_config() -> dict[str, Any]:
        host = _request_host_name() or websocket.hostname or "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"  # an IPv6 address
        scheme = "wss" if request.scheme == "https" else "ws"
        port = f":{websocket_port}" if websocket_port is not None else ""
        return {
            "websocketUrl": f"{scheme}://{host}{port}{websocket_path}",
            "websocketPort": websocket_port,
            "websocketPath": websocket_path,
            **({"authRequired": True} if auth_required else {}),
        }

    def unauthorized() -> Response | None:
        """401 unless the request carries an admin token (or none is configured)."""
        if admin_tokens is None or admin_tokens.check(request.headers.get("Authorization")):
            return None
        return Response(
            "admin token required: Authorization: Bearer <token>\n",
            status=401,
            content_type="text/plain",
            headers={"WWW-Authenticate": 'Bearer realm="broadcaster"'},
        )

    @app.get("/api/websocket/status")
    async def websocket_status() -> dict[str, Any] | Response:
        if (refused := unauthorized()) is not None:
            return refused
        snapshot = hub.snapshot()
        return {
            "status": "ok",
            "timestamp": iso_now(),
            **uptime_fields(snapshot),
            "summary": status_summary(snapshot),
            "connections": [connection_view(connection) for connection in snapshot.connections],
        }

    @app.get("/health")
    async def health_check() -> tuple[dict[str, Any], int]:
        """200 or 503 within ``CHECK_WAIT_S``, however slow the database (see source_health)."""
        await health.check()
        influxdb = health.report()
        healthy = bool(influxdb["healthy"])
        snapshot = hub.snapshot()
        body = {
            "status": "ok" if healthy else "degraded",
            "timestamp": iso_now(),
            **uptime_fields(snapshot),
            "services": {
                "websocket": {
                    "healthy": snapshot.healthy,
                    "activeConnections": snapshot.active,
                    "trackedConnections": snapshot.tracked,
                    "totalConnectionsTracked": snapshot.tracked,
                    "totalConnectionsCreated": snapshot.counters["connections_created"],
                },
                "influxdb": influxdb,
                # Not in the verdict: Redis down alone must not make every node 503 at once.
                **({"redis": cluster.health()} if cluster is not None else {}),
            },
        }
        return body, 200 if healthy else 503

    @app.get("/api/cluster/status")
    async def cluster_status() -> dict[str, Any] | Response:
        if (refused := unauthorized()) is not None:
            return refused
        if cluster is None:
            return Response("not a cluster (no --redis-url)\n", 404, content_type="text/plain")
        try:
            return await cluster.status()
        except (BrokerUnavailable, trio.TooSlowError) as exc:
            return Response(
                f"Redis unreachable: {exc or type(exc).__name__}\n",
                503,
                content_type="text/plain",
            )

    @app.get("/metrics")
    async def metrics() -> Response:
        if (refused := unauthorized()) is not None:
            return refused
        return Response(render(registry), content_type=CONTENT_TYPE_LATEST)

    return app


def status_summary(snapshot: HubSnapshot) -> dict[str, Any]:
    """The status API's ``summary``, generated from the snapshot: every counter under its JSON
    key (:data:`~broadcaster.counters.COUNTERS`), so it cannot drift from /metrics or stats."""
    return {
        "activeConnections": snapshot.active,
        "trackedConnections": snapshot.tracked,
        **{spec.json: snapshot.counters[spec.name] for spec in COUNTERS},
        "connectionErrors": snapshot.connection_errors,
        "subscribers": snapshot.subscribers,
        "averageConnectionDurationS": _average_age_s(snapshot),
    }


def uptime_fields(snapshot: HubSnapshot) -> dict[str, Any]:
    """``startedAt`` and ``uptimeS``, as /health and the status API show them."""
    return {
        "startedAt": iso_from_unix_ms(snapshot.started_at_unix_ms),
        "uptimeS": snapshot.uptime_s,
    }


def _average_age_s(snapshot: HubSnapshot) -> float | None:
    """How long the open connections have been open, on average; None without any."""
    ages = [c.age_s() for c in snapshot.connections if c.closing is None]
    return round(sum(ages) / len(ages), 3) if ages else None


def _request_host_name() -> str | None:
    """The host name from the request's Host header, without the port; None if unusable."""
    try:
        name = urlsplit(f"//{request.host}").hostname
    except ValueError:  # e.g. an unbalanced "[" in the header
        return None
    if name is None or not _HOST_NAME.fullmatch(name):
        return None
    return name
