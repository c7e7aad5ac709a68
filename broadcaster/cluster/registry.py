"""The cluster's view of itself: each node's presence in Redis, ``GET /api/cluster/status``
and the ``redis`` part of ``/health``.

Each node writes its presence (URLs, connections, subscribers per topic) under a key that
expires after :data:`PRESENCE_TTL_S` and rewrites it every :data:`PRESENCE_REFRESH_S`: a
node that dies (kill -9) leaves the list within a few seconds; one that stops gracefully
leaves it at once (:meth:`ClusterRegistry.leave`).
"""

from __future__ import annotations

import contextlib
from typing import Any

import structlog
import trio

from broadcaster.cluster.broker import BrokerUnavailable
from broadcaster.cluster.redis_broker import COMMAND_TIMEOUT_S, RedisBroker
from broadcaster.hub import Hub

log = structlog.get_logger("broadcaster.cluster.registry")

PRESENCE_TTL_S = 3.0
"""How long a node stays listed after its last refresh."""
PRESENCE_REFRESH_S = 1.0
"""How often a node refreshes its presence: three chances before it expires."""


class ClusterRegistry:
    """One node's presence, and the cluster's status as this node reads it from Redis."""

    def __init__(self, broker: RedisBroker, hub: Hub) -> None:
        self._broker = broker
        self._hub = hub
        self.ws_url = ""
        self.http_url = ""

    def presence(self) -> dict[str, Any]:
        """What this node says of itself (``lastSeen`` is added as it is written)."""
        snapshot = self._hub.snapshot()
        return {
            "id": self._broker.node_id,
            "wsUrl": self.ws_url,
            "httpUrl": self.http_url,
            "activeConnections": snapshot.active,
            "subscribers": snapshot.subscribers,
        }

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Refresh this node's presence until cancelled (while Redis is away, try again at
        the next refresh)."""
        task_status.started()
        while True:
            # While Redis is away: try again at the next refresh (the broker logged the loss
            # once; /health tells it).
            with trio.move_on_after(COMMAND_TIMEOUT_S), contextlib.suppress(BrokerUnavailable):
                await self._broker.register(self.presence(), PRESENCE_TTL_S)
            await trio.sleep(PRESENCE_REFRESH_S)

    async def leave(self) -> None:
        """Take this node off the list now (graceful shutdown); at worst it expires."""
        with trio.move_on_after(COMMAND_TIMEOUT_S):
            try:
                await self._broker.deregister()
            except BrokerUnavailable as exc:
                log.warning("could not leave the cluster's node list", error=str(exc))

    async def status(self) -> dict[str, Any]:
        """``GET /api/cluster/status``: the live nodes and their totals.

        Raises:
            BrokerUnavailable: Redis cannot be read.
        """
        with trio.fail_after(COMMAND_TIMEOUT_S):
            nodes = await self._broker.live_nodes()
        return {
            "cluster": self._broker.cluster,
            "nodes": nodes,
            "summary": {
                "nodes": len(nodes),
                "activeConnections": sum(int(n.get("activeConnections", 0)) for n in nodes),
            },
        }

    def health(self) -> dict[str, Any]:
        """The ``redis`` part of ``/health`` (Redis down alone never makes /health 503)."""
        return {
            "healthy": self._broker.healthy,
            "mode": self._broker.mode,
            "lastError": self._broker.last_error,
        }
