"""The HTTP app (quart-trio): WebSocket status, health and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from quart import Response
from quart_trio import QuartTrio

from broadcaster.hub import Hub
from broadcaster.metrics import render
from broadcaster.protocol import iso_now
from broadcaster.source_health import SourceHealth


def create_app(hub: Hub, health: SourceHealth, registry: CollectorRegistry) -> QuartTrio:
    """Build the app; it only reads the hub and the health, never changes them."""
    app = QuartTrio("broadcaster")

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
