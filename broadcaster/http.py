"""The HTTP app (quart-trio): WebSocket status, health, Prometheus metrics, and the live
dashboard (``/``, ``/static/...``, ``/api/client-config``).

The dashboard's files live in ``broadcaster/static`` inside the package, so they ship in the
wheel. The page connects to the WebSocket server, which listens on another port: it asks
``/api/client-config`` for the URL, built from the host name the browser used to reach this
app, so the page also works when opened from another machine.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from quart import Response, abort, request, send_from_directory
from quart_trio import QuartTrio

from broadcaster.hub import Hub
from broadcaster.metrics import render
from broadcaster.protocol import iso_now
from broadcaster.source_health import SourceHealth

STATIC_DIR = Path(__file__).parent / "static"
# Explicit, not mimetypes: Python 3.11 without /etc/mime.types says application/javascript.
# Quart adds "; charset=utf-8" to text types.
CONTENT_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}
# What a host name in a Host header may look like (names, IPv4, IPv6 without brackets).
_HOST_NAME = re.compile(r"[A-Za-z0-9._:-]{1,253}")


def create_app(
    hub: Hub, health: SourceHealth, registry: CollectorRegistry, *, websocket_url: str
) -> QuartTrio:
    """Build the app; it only reads the hub and the health, never changes them.

    Args:
        websocket_url: the WebSocket server's URL as bound (``WebSocketEndpoint.url``); its
            port and path tell the dashboard where to connect.
    """
    app = QuartTrio("broadcaster", static_folder=None)
    websocket = urlsplit(websocket_url)
    websocket_port = websocket.port
    websocket_path = websocket.path or "/"

    async def send_static(file_name: str) -> Response:
        content_type = CONTENT_TYPES.get(Path(file_name).suffix)
        if content_type is None:
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
        }

    @app.get("/api/websocket/status")
    async def websocket_status() -> dict[str, Any]:
        totals = hub.totals
        return {
            "status": "ok",
            "timestamp": iso_now(),
            "summary": {
                "activeConnections": hub.active_count(),
                "trackedConnections": len(hub.connections),
                "totalConnectionsCreated": totals.connections_created,
                "totalConnectionsClosed": totals.connections_closed,
                "totalConnectionsRefused": totals.connections_refused,
                "totalBroadcasts": totals.broadcasts,
                "totalErrors": totals.errors,
                "slowConsumersClosed": totals.slow_consumers_closed,
                "replacedUpdates": totals.replaced_updates,
                "heartbeatTimeouts": totals.heartbeat_timeouts,
                "subscribers": hub.subscriber_counts(),
            },
            "connections": [connection.summary() for connection in hub.connections.values()],
        }

    @app.get("/health")
    async def health_check() -> tuple[dict[str, Any], int]:
        await health.check()
        influxdb = health.report()
        healthy = bool(influxdb["healthy"])
        body = {
            "status": "ok" if healthy else "degraded",
            "timestamp": iso_now(),
            "services": {
                "websocket": {
                    "healthy": True,
                    "activeConnections": hub.active_count(),
                    "totalConnectionsTracked": len(hub.connections),
                    "totalConnectionsCreated": hub.totals.connections_created,
                },
                "influxdb": influxdb,
            },
        }
        return body, 200 if healthy else 503

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(render(registry), content_type=CONTENT_TYPE_LATEST)

    return app


def _request_host_name() -> str | None:
    """The host name from the request's Host header, without the port; None if unusable."""
    try:
        name = urlsplit(f"//{request.host}").hostname
    except ValueError:  # e.g. an unbalanced "[" in the header
        return None
    if name is None or not _HOST_NAME.fullmatch(name):
        return None
    return name
