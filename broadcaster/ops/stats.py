"""The periodic stats log line, written while clients are connected."""

from __future__ import annotations

from typing import Any

import structlog
import trio

from broadcaster.hub import Hub, HubSnapshot
from broadcaster.sources.health import SourceHealth

log = structlog.get_logger("broadcaster.ops.stats")


def stats_fields(
    snapshot: HubSnapshot, health: SourceHealth, previous_broadcasts: int
) -> dict[str, Any]:
    """The fields of one stats line, generated from the hub's snapshot: every counter under
    its field name (see :mod:`broadcaster.counters`), "active" and "tracked" as everywhere."""
    return {
        "active": snapshot.active,
        "tracked": snapshot.tracked,
        "subscribers": snapshot.subscribers,
        "broadcasts_since_last": snapshot.counters["broadcasts"] - previous_broadcasts,
        "influxdb_healthy": health.healthy,
        **snapshot.counters,
        "connection_errors": snapshot.connection_errors,
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
    previous = hub.counters.broadcasts
    next_line = trio.current_time()
    while True:
        next_line += interval_s
        await trio.sleep_until(next_line)
        snapshot = hub.snapshot()
        if snapshot.tracked:
            log.info("stats", **stats_fields(snapshot, health, previous))
        previous = snapshot.counters["broadcasts"]
