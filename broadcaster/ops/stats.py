"""The periodic stats log line, written while clients are connected."""

from __future__ import annotations

from typing import Any

import structlog
import trio

from broadcaster.hub import Hub
from broadcaster.sources.health import SourceHealth

log = structlog.get_logger("broadcaster.ops.stats")


def stats_fields(hub: Hub, health: SourceHealth, previous_broadcasts: int) -> dict[str, Any]:
    """The fields of one stats line."""
    totals = hub.totals
    return {
        "active": len(hub.connections),
        "subscribers": hub.subscriber_counts(),
        "broadcasts_since_last": totals.broadcasts - previous_broadcasts,
        "influxdb_healthy": health.healthy,
        **totals.as_dict(),
        "connection_errors": hub.containment.counts(),
    }


async def log_stats(
    hub: Hub,
    health: SourceHealth,
    *,
    interval_s: float,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Every ``interval_s``, one structured ``stats`` line if any client is connected."""
    task_status.started()
    previous = hub.totals.broadcasts
    next_line = trio.current_time()
    while True:
        next_line += interval_s
        await trio.sleep_until(next_line)
        if hub.connections:
            log.info("stats", **stats_fields(hub, health, previous))
        previous = hub.totals.broadcasts
