"""``GET /api/cluster/status`` and ``services.redis`` of ``/health`` through the HTTP app,
in process (Quart's test client) with a stand-in for the cluster: the routes' contracts
(admin token, 404 standalone, 503 without Redis, Redis never making /health 503). The real
cluster behind them is tested end to end in test_cluster_e2e.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from broadcaster.auth.admin import AdminTokens
from broadcaster.cluster.broker import BrokerUnavailable
from broadcaster.config import Settings
from broadcaster.ops.http import create_app
from broadcaster.ops.metrics import build_registry
from scripts import docs_tables

HOST = {"Host": "127.0.0.1:8080"}
STATUS = {
    "cluster": "broadcaster",
    "nodes": [
        {
            "id": "n1",
            "wsUrl": "ws://127.0.0.1:8765/ws",
            "httpUrl": "http://127.0.0.1:8080",
            "activeConnections": 0,
            "subscribers": {},
            "lastSeen": "2026-11-22T01:18:31.935Z",
        }
    ],
    "summary": {"nodes": 1, "activeConnections": 0},
}


class StandInCluster:
    """Redis reachable or not, as the test says."""

    def __init__(self, reachable: bool) -> None:
        self.reachable = reachable

    def health(self) -> dict[str, Any]:
        if self.reachable:
            return {"healthy": True, "mode": "cluster", "lastError": None}
        return {"healthy": False, "mode": "local", "lastError": "Connection refused"}

    async def status(self) -> dict[str, Any]:
        if not self.reachable:
            raise BrokerUnavailable("Connection refused")
        return STATUS


def app_with(cluster: StandInCluster | None, admin_file: Path | None = None) -> Any:
    hub, health, loop = docs_tables.service_parts(Settings())
    health.record_success()  # InfluxDB healthy: the status code is then InfluxDB's verdict
    return create_app(
        hub,
        health,
        build_registry(hub, health, loop),
        websocket_url="ws://127.0.0.1:8765/ws",
        admin_tokens=None if admin_file is None else AdminTokens(admin_file),
        cluster=cluster,
    )


async def test_the_status_lists_the_nodes_behind_the_admin_token(tmp_path: Path) -> None:
    token_file = tmp_path / "admin"
    token_file.write_text("s3cret-admin-token\n")
    client = app_with(StandInCluster(reachable=True), token_file).test_client()
    refused = await client.get("/api/cluster/status", headers=HOST)
    assert refused.status_code == 401
    answered = await client.get(
        "/api/cluster/status", headers={**HOST, "Authorization": "Bearer s3cret-admin-token"}
    )
    assert answered.status_code == 200
    assert await answered.get_json() == STATUS


async def test_standalone_has_no_cluster_status_and_no_redis_in_health() -> None:
    client = app_with(None).test_client()
    assert (await client.get("/api/cluster/status", headers=HOST)).status_code == 404
    health = await (await client.get("/health", headers=HOST)).get_json()
    assert "redis" not in health["services"]


async def test_redis_down_is_503_for_the_status_but_never_for_health() -> None:
    client = app_with(StandInCluster(reachable=False)).test_client()
    status = await client.get("/api/cluster/status", headers=HOST)
    assert status.status_code == 503
    assert "Redis unreachable" in (await status.get_data(as_text=True))
    health = await client.get("/health", headers=HOST)
    assert health.status_code == 200
    body = await health.get_json()
    assert body["services"]["redis"] == {
        "healthy": False,
        "mode": "local",
        "lastError": "Connection refused",
    }
