"""JSON views of the domain objects, for the status API and the operator's log lines.

The WebSocket side keeps its state in its own terms (monotonic times, counters, the close
record); how a connection is shown to an operator is decided here, once, and used by both
``GET /api/websocket/status`` and the ``connection closed`` log line.
"""

from __future__ import annotations

import time
from typing import Any

import structlog

from broadcaster.protocol import iso_from_unix_ms
from broadcaster.ws.connection import Connection

log = structlog.get_logger("broadcaster.hub")


def connection_view(connection: Connection) -> dict[str, Any]:
    """The connection as reported by the status API and the disconnect log line.

    An authenticated connection also shows who holds it (never its token).
    """
    view: dict[str, Any] = {
        "id": connection.id,
        "connectedAt": iso_from_unix_ms(connection.connected_at_unix_ms),
        "lastActivity": iso_from_unix_ms(time.time() * 1000 - connection.idle_s() * 1000),
        "lastBroadcast": iso_from_unix_ms(connection.last_broadcast_unix_ms),
        "broadcastCount": connection.broadcast_count,
        "errorCount": connection.error_count,
        "lastError": connection.last_error,
        "subscriptions": sorted(connection.subscriptions),
        "lastPingRttMs": connection.last_ping_rtt_ms,
        "clientInfo": {
            "userAgent": connection.client_info.user_agent,
            "ip": connection.client_info.ip,
        },
        "pendingMessages": connection.outbound.pending_items,
        "pendingBytes": connection.outbound.pending_bytes,
        "replacedUpdates": connection.outbound.replaced_updates,
        "droppedMessages": connection.dropped_messages,
    }
    if (identity := connection.identity) is not None:
        view["identity"] = {"sub": identity.sub, "tenant": identity.tenant}
    return view


def log_connection_closed(connection: Connection, remaining: int) -> None:
    """The ``connection closed`` line: how it ended, and the connection's view."""
    log.info(
        "connection closed",
        code=connection.close_code,
        reason=connection.close_reason,
        closed_by=connection.closed_by,
        remaining=remaining,
        **{k: v for k, v in connection_view(connection).items() if k != "id"},
        connection_id=connection.id,
    )
