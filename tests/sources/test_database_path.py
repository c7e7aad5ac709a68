"""Queries as influxd itself counts them, and a database outage with recovery.

Real influxd, real clients, real clock: waits are for messages, with generous deadlines.
"""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path
from typing import Any

import trio
from trio_websocket import WebSocketConnection

from broadcaster.service import RunningService, serve
from tests.influxd import Influxd, free_port, start_influxd
from tests.services import StartServiceOnInfluxd, make_settings
from tests.wsclient import connect, eventually, get_json, is_update, next_message, wait_for

INTERVAL_MS = 1500


async def query_requests(influxd: Influxd) -> int:
    """influxd's own count of /query requests (this read counts as one)."""
    return await trio.to_thread.run_sync(influxd.http_stat, "queryReq")


async def test_no_query_without_subscribers_and_one_per_topic_per_tick(
    start_service_on_influxd: StartServiceOnInfluxd, influxd: Influxd
) -> None:
    service = await start_service_on_influxd(broadcast_interval_ms=INTERVAL_MS)
    # Nobody connected: over two intervals the only query is our own stats read.
    before = await query_requests(influxd)
    await trio.sleep(2 * INTERVAL_MS / 1000)  # nothing to wait for: silence is the point
    assert await query_requests(influxd) - before == 1
    assert service.loop.ticks >= 1

    url = f"ws://127.0.0.1:{service.websocket.port}/ws"
    seqs: dict[int, dict[str, int]] = {}
    async with trio.open_nursery() as clients:

        async def client(number: int, task_status: trio.TaskStatus[None]) -> None:
            async with connect(url) as ws:
                await next_message(ws)
                seqs[number] = {}
                task_status.started()
                while True:
                    message = await next_message(ws, timeout_s=30)
                    seqs[number][message["topic"]] = message["seq"]

        for number in range(40):
            await clients.start(client, number)

        async def all_reached(seq: int) -> None:
            await eventually(
                lambda: all(
                    min(s.get("overview", 0), s.get("regressions", 0)) >= seq for s in seqs.values()
                ),
                timeout_s=30,
            )

        await all_reached(2)
        first = await query_requests(influxd)
        reached = max(max(s.values()) for s in seqs.values())
        await all_reached(reached + 2)
        second = await query_requests(influxd)
        clients.cancel_scope.cancel()
    # Two ticks, two topics, 40 clients: four queries, plus our second stats read.
    assert second - first == 2 * 2 + 1


async def subscribe_and_first_update(ws: WebSocketConnection) -> dict[str, Any]:
    await next_message(ws)
    return await wait_for(ws, is_update("overview", stale=False))


async def test_outage_gives_error_and_stale_value_then_recovers(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    port = free_port()
    database = await trio.to_thread.run_sync(
        partial(start_influxd, tmp_path / "db", http_port=port)
    )
    try:
        await trio.to_thread.run_sync(database.query, 'CREATE DATABASE "metrics"')
        service: RunningService = await nursery.start(
            partial(
                serve,
                make_settings(
                    influx_url=database.url,
                    broadcast_interval_ms=500,
                    query_timeout_ms=1000,
                    default_topics="overview",
                ),
            )
        )
        health_url = f"{service.http_url}/health"
        async with connect(f"ws://127.0.0.1:{service.websocket.port}/ws") as ws:
            good = await subscribe_and_first_update(ws)
            assert (await get_json(health_url))[0] == 200

            await trio.to_thread.run_sync(database.stop)
            error = await wait_for(ws, lambda m: m["type"] == "error", timeout_s=10)
            assert error["code"] == "influxdb_unavailable"
            assert error["topic"] == "overview"
            assert error["cause"] == "unavailable"
            stale = await next_message(ws)
            assert stale["type"] == "metrics_update"
            assert stale["stale"] is True
            assert stale["data"] == good["data"]
            assert stale["seq"] > good["seq"]
            code, health = await get_json(health_url)
            assert code == 503
            assert health["status"] == "degraded"
            assert health["services"]["influxdb"]["healthy"] is False
            assert re.fullmatch(
                rf"InfluxDB at {re.escape(database.url)} (unreachable: .+|timed out \(\w+\))",
                health["services"]["influxdb"]["lastError"],
            )

            database = await trio.to_thread.run_sync(
                partial(start_influxd, tmp_path / "db", http_port=port)
            )
            await wait_for(ws, is_update("overview", stale=False), timeout_s=20)
            code, health = await get_json(health_url)
            assert code == 200
            assert health["services"]["influxdb"]["healthy"] is True
    finally:
        await trio.to_thread.run_sync(database.stop)


async def test_health_checks_the_database_while_nobody_listens(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    database = await trio.to_thread.run_sync(start_influxd, tmp_path / "db")
    service: RunningService = await nursery.start(
        partial(serve, make_settings(influx_url=database.url, broadcast_interval_ms=200))
    )
    health_url = f"{service.http_url}/health"
    assert (await get_json(health_url))[0] == 200
    await trio.to_thread.run_sync(database.stop)

    async def degraded() -> bool:
        return (await get_json(health_url))[0] == 503

    await eventually(degraded)
