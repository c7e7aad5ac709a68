"""The heartbeat sweeper: pings every connection and closes the ones that went silent.

Any message or pong from a client is activity. A connection silent for longer than the
connection timeout is closed with 4000 (``heartbeat_timeout``) and counted; this is how a peer
that completed the handshake and then never reads or answers is found.

Before that close, an operator is warned: a ping still unanswered at the next sweep is counted
(``pings_unanswered``; see :meth:`Connection.request_ping`), and each sweep writes one
``stale connections`` line naming the connections silent for more than half the timeout
(the first :data:`STALE_NAMED` of them, and how many more).
"""

from __future__ import annotations

from collections.abc import Callable

import structlog
import trio

from broadcaster.containment import Stage
from broadcaster.hub import Hub
from broadcaster.protocol import CloseCode
from broadcaster.ws.connection import Connection

log = structlog.get_logger("broadcaster.ws.heartbeat")

# A line naming 10 000 silent connections helps nobody and costs a burst of work: the first 20
# identify the pattern (one address? one proxy?), the count says how large it is.
STALE_NAMED = 20


def sweep_once(hub: Hub, *, connection_timeout_s: float, ping_timeout_s: float) -> int:
    """Close silent connections and ping the others; return how many were closed.

    One connection's failure is reported and cuts that connection; the sweep goes on.
    """
    closed = 0
    connections = hub.connections_now()
    for connection in connections:
        try:
            closed += _sweep_connection(hub, connection, connection_timeout_s, ping_timeout_s)
        except Exception as failure:
            hub.containment.report(
                Stage.HEARTBEAT,
                failure,
                connection_id=connection.id,
                address=connection.client_info.ip,
            )
            connection.abort(CloseCode.INTERNAL_ERROR, "internal error")
    _log_stale(connections, connection_timeout_s / 2)
    return closed


def _log_stale(connections: tuple[Connection, ...], silent_s: float) -> None:
    """One warning naming the open connections silent for more than ``silent_s``, if any."""
    stale = [c for c in connections if c.closing is None and c.idle_s() > silent_s]
    if not stale:
        return
    log.warning(
        "stale connections",
        count=len(stale),
        silent_over_ms=round(silent_s * 1000),
        connections=[
            {"id": c.id, "ip": c.client_info.ip, "idle_ms": round(c.idle_s() * 1000)}
            for c in stale[:STALE_NAMED]
        ],
        not_named=max(0, len(stale) - STALE_NAMED),
    )


def _sweep_connection(
    hub: Hub, connection: Connection, connection_timeout_s: float, ping_timeout_s: float
) -> int:
    """Close ``connection`` if silent for too long (1), else ping it (0)."""
    idle_s = connection.idle_s()
    if idle_s <= connection_timeout_s:
        connection.request_ping(ping_timeout_s)
        return 0
    if connection.closing is not None:
        return 0  # already closing
    connection.close(CloseCode.HEARTBEAT_TIMEOUT, f"no activity for {round(idle_s * 1000)} ms")
    hub.counters.heartbeat_timeouts += 1  # counted where the timeout is decided
    log.warning("connection timed out", connection_id=connection.id, idle_ms=round(idle_s * 1000))
    return 1


async def sweep_heartbeats(
    hub: Hub,
    *,
    interval_s: float,
    connection_timeout_s: float,
    on_sweep: Callable[[int], None] = lambda closed: None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Every ``interval_s``: one :func:`sweep_once`, whose count of connections closed for
    silence ``on_sweep`` is told (the notifications' HeartbeatWatcher). Runs until cancelled."""
    task_status.started()
    next_sweep = trio.current_time()
    while True:
        next_sweep += interval_s
        await trio.sleep_until(next_sweep)
        closed = sweep_once(
            hub, connection_timeout_s=connection_timeout_s, ping_timeout_s=connection_timeout_s
        )
        on_sweep(closed)
