"""The whole service in-process against a real influxd, with real WebSocket clients on loopback.

Real clock here, so every wait has a generous deadline and waits for an event (a message, a
status change), never for a fixed time.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed

from broadcaster.channels import Channel
from broadcaster.service import RunningService
from tests.influxd import Influxd
from tests.services import StartServiceOnInfluxd
from tests.wsclient import (
    connect,
    get_json,
    is_update,
    next_message,
    send_json,
    wait_for,
)

StartService = Callable[..., Awaitable[RunningService]]

ISO_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
"""An ISO-8601 UTC instant with milliseconds, as every timestamp the service sends."""

TOPICS_TOML = """
[[topic]]
name = "cpu"
description = "latest CPU value"
query = "SELECT last(v) AS v FROM cpu"
"""


@pytest.fixture
async def start_service(
    start_service_on_influxd: StartServiceOnInfluxd,
    influxd: Influxd,
    influx_db: str,
    tmp_path: Path,
) -> StartService:
    """The shared ``start_service_on_influxd`` with a ``cpu`` topic (its value 42) and a
    one-minute interval; keyword arguments override settings."""
    topics_file = tmp_path / "topics.toml"
    topics_file.write_text(TOPICS_TOML)
    await trio.to_thread.run_sync(influxd.write, influx_db, "cpu v=42")

    async def start(**overrides: Any) -> RunningService:
        defaults = {"topics_file": str(topics_file), "broadcast_interval_ms": 60_000}
        return await start_service_on_influxd(**{**defaults, **overrides})

    return start


def ws_url(service: RunningService) -> str:
    return f"ws://127.0.0.1:{service.websocket.port}/ws"


async def test_welcome_then_default_topics_at_once(start_service: StartService) -> None:
    service = await start_service()
    async with connect(ws_url(service)) as ws:
        welcome = await next_message(ws)
        assert welcome["type"] == "welcome"
        assert re.fullmatch(r"ws_\d+_\d{13}", welcome["connectionId"])
        assert set(welcome["topics"]) == {"overview", "regressions", "latency-history", "cpu"}
        assert welcome["subscribed"] == ["overview", "regressions"]
        assert welcome["broadcastIntervalMs"] == 60_000
        assert welcome["timestamp"].endswith("Z")
        # The interval is a minute: these can only come from the immediate first query.
        with trio.fail_after(5):
            first = [await next_message(ws), await next_message(ws)]
        assert {m["topic"] for m in first} == {"overview", "regressions"}
        for update in first:
            assert update["type"] == "metrics_update"
            assert update["seq"] == 1
            assert update["stale"] is False
            assert isinstance(update["data"], dict)


async def test_subscribe_unsubscribe_and_latest_value_at_once(start_service: StartService) -> None:
    service = await start_service(default_topics="overview")
    async with connect(ws_url(service)) as ws:
        await wait_for(ws, is_update("overview"))
        await send_json(ws, {"type": "subscribe", "topics": ["cpu"]})
        confirmed = await next_message(ws)
        assert confirmed == {"type": "subscription_confirmed", "topics": ["cpu", "overview"]}
        update = await wait_for(ws, is_update("cpu"), timeout_s=5)
        assert update["data"]["series"][0]["rows"][0]["v"] == 42
        await send_json(ws, {"type": "unsubscribe", "topics": ["overview"]})
        assert await next_message(ws) == {"type": "subscription_confirmed", "topics": ["cpu"]}
        # A second client subscribing to the followed topic gets the cached value at once.
        async with connect(ws_url(service)) as second:
            await wait_for(second, is_update("overview"))
            queries_before = service.loop.states["cpu"].queries
            ticks_before = service.loop.ticks
            await send_json(second, {"type": "subscribe", "topics": ["cpu"]})
            cached = await wait_for(second, is_update("cpu"), timeout_s=5)
            # Ticks are aligned to the wall clock, so one may fall in this test: then the
            # cached value is that tick's, still without a query of its own.
            ticks = service.loop.ticks - ticks_before
            assert cached["seq"] == service.loop.channels[Channel("cpu", None)].seq
            assert service.loop.states["cpu"].queries == queries_before + ticks
            if ticks == 0:
                assert cached["seq"] == update["seq"]


async def test_ping_gets_pong_with_its_id(start_service: StartService) -> None:
    service = await start_service(default_topics="")
    async with connect(ws_url(service)) as ws:
        await next_message(ws)
        await send_json(ws, {"type": "ping", "id": "abc-1"})
        pong = await next_message(ws)
        assert pong["type"] == "pong"
        assert pong["id"] == "abc-1"
        assert pong["timestamp"].endswith("Z")
        await send_json(ws, {"type": "ping"})
        assert "id" not in await next_message(ws)


NO_SUCH_TOPIC = "unknown topic 'no-such-topic'; available topics: 4 (listed in welcome.topics)"
TOPICS_LIST = "'topics' must be a non-empty list of topic names"


@pytest.mark.parametrize(
    ("frame", "code", "message"),
    [
        ("{not json", "invalid_json", "message is not valid JSON: "),
        (
            '{"type": "dance"}',
            "unknown_type",
            "unknown message type 'dance'; expected ping, subscribe, unsubscribe, auth or snapshot",
        ),
        ('{"type": "subscribe"}', "invalid_message", TOPICS_LIST),
        ('{"type": "subscribe", "topics": "cpu"}', "invalid_message", TOPICS_LIST),
        (
            '{"type": "subscribe", "topics": [1, 2]}',
            "invalid_message",
            "every topic must be a string of 1 to 128 characters",
        ),
        ('{"topics": ["cpu"]}', "invalid_message", "message needs a string 'type'"),
        ("[1, 2, 3]", "invalid_message", "message must be a JSON object"),
        ('{"type": "subscribe", "topics": ["no-such-topic"]}', "invalid_topic", NO_SUCH_TOPIC),
        ('{"type": "unsubscribe", "topics": ["no-such-topic"]}', "invalid_topic", NO_SUCH_TOPIC),
        (
            b"\x00\x01binary",
            "binary_not_supported",
            "binary frames are not supported; send JSON text",
        ),
    ],
)
async def test_bad_input_gets_error_and_connection_stays_open(
    start_service: StartService, frame: str | bytes, code: str, message: str
) -> None:
    service = await start_service(default_topics="")
    async with (
        connect(ws_url(service)) as ws,
        connect(ws_url(service)) as bystander,
    ):
        await next_message(ws)
        await next_message(bystander)
        await ws.send_message(frame)
        error = await next_message(ws)
        assert error["type"] == "error"
        assert error["code"] == code
        if code == "invalid_json":  # then the JSON parser's own words, which are not ours
            assert error["message"].startswith(message)
        else:
            assert error["message"] == message
        await send_json(ws, {"type": "ping", "id": 1})
        assert (await next_message(ws))["type"] == "pong"
        await send_json(bystander, {"type": "ping", "id": 2})
        assert (await next_message(bystander))["id"] == 2
    _, status = await get_json(f"{service.http_url}/api/websocket/status")
    assert status["summary"]["totalErrors"] == 1


async def test_oversized_frame_closes_only_that_client_with_1009(
    start_service: StartService,
) -> None:
    service = await start_service(default_topics="", max_message_bytes=1024)
    async with connect(ws_url(service)) as bystander:
        await next_message(bystander)
        async with connect(ws_url(service)) as ws:
            await next_message(ws)
            await ws.send_message("x" * 2000)
            with trio.fail_after(5), pytest.raises(ConnectionClosed) as closed:
                await ws.get_message()
            assert closed.value.reason.code == 1009
        await send_json(bystander, {"type": "ping", "id": 3})
        assert (await next_message(bystander))["id"] == 3
    _, status = await get_json(f"{service.http_url}/api/websocket/status")
    assert status["summary"]["oversizedMessages"] == 1
    # Refusing an oversized message is foreseen, not a failure of the server's own.
    assert status["summary"]["connectionErrors"] == dict.fromkeys(
        ("handshake", "reader", "handler", "flusher", "heartbeat", "lifecycle", "http"), 0
    )


async def test_over_capacity_is_refused_with_1013(start_service: StartService) -> None:
    service = await start_service(default_topics="", max_connections=2)
    async with (
        connect(ws_url(service)) as first,
        connect(ws_url(service)) as second,
    ):
        await next_message(first)
        await next_message(second)
        async with connect(ws_url(service)) as third:
            with trio.fail_after(5), pytest.raises(ConnectionClosed) as closed:
                await third.get_message()
            assert closed.value.reason.code == 1013
        await send_json(first, {"type": "ping", "id": 4})
        assert (await next_message(first))["id"] == 4
    assert service.hub.counters.connections_refused == 1


async def test_status_and_health(start_service: StartService) -> None:
    service = await start_service()
    headers = [("User-Agent", "test-dashboard/1.0")]
    async with connect(ws_url(service), extra_headers=headers) as ws:
        welcome = await next_message(ws)
        # The two default topics at once (the interval is a minute): then nothing moves.
        first = [await next_message(ws), await next_message(ws)]
        assert sorted(update["topic"] for update in first) == ["overview", "regressions"]
        code, status = await get_json(f"{service.http_url}/api/websocket/status")
        assert code == 200
        assert status["status"] == "ok"
        assert ISO_MS.fullmatch(status["timestamp"])
        summary = status["summary"]
        assert summary["activeConnections"] == 1
        assert summary["trackedConnections"] == 1
        assert summary["totalBroadcasts"] == 2
        assert summary["totalErrors"] == 0
        (connection,) = status["connections"]
        assert connection["id"] == welcome["connectionId"]
        assert connection["clientInfo"] == {"userAgent": "test-dashboard/1.0", "ip": "127.0.0.1"}
        assert connection["subscriptions"] == ["overview", "regressions"]
        assert connection["broadcastCount"] == 2
        assert connection["errorCount"] == 0
        assert connection["lastError"] is None
        assert connection["lastPingRttMs"] is None  # the first ping is 15 s away
        for key in ("connectedAt", "lastActivity", "lastBroadcast"):
            assert ISO_MS.fullmatch(connection[key]), key
        assert connection["connectedAt"] <= connection["lastBroadcast"] <= status["timestamp"]

        code, health = await get_json(f"{service.http_url}/health")
        assert code == 200
        assert health["status"] == "ok"
        websocket = health["services"]["websocket"]
        assert websocket["healthy"] is True
        assert websocket["activeConnections"] == 1
        assert websocket["totalConnectionsTracked"] == 1
        influxdb = health["services"]["influxdb"]
        assert influxdb["healthy"] is True
        assert influxdb["lastQueryAt"].endswith("Z")
        assert influxdb["lastError"] is None


async def test_metrics_endpoint_exposes_counters(start_service: StartService) -> None:
    service = await start_service()
    async with connect(ws_url(service)) as ws:
        await next_message(ws)  # welcome
        first = [await next_message(ws), await next_message(ws)]
        assert sorted(update["topic"] for update in first) == ["overview", "regressions"]
        import httpx

        async with httpx.AsyncClient() as client:
            text = (await client.get(f"{service.http_url}/metrics")).text
    assert "broadcaster_connections_active 1.0" in text
    assert re.search(r'broadcaster_topic_subscribers\{topic="overview"\} 1\.0', text)
    # One client, the two default topics refreshed once each (the interval is a minute).
    assert "broadcaster_broadcasts_total 2.0" in text.splitlines()
    for stage in ("handshake", "reader", "handler", "flusher", "heartbeat", "lifecycle", "http"):
        assert f'broadcaster_connection_errors_total{{stage="{stage}"}} 0.0' in text


async def test_total_broadcasts_counts_the_cached_value_sent_on_subscribe(
    start_service: StartService,
) -> None:
    service = await start_service(default_topics="cpu")
    async with connect(ws_url(service)) as first:
        await wait_for(first, is_update("cpu"))  # the first subscriber's refresh
        async with connect(ws_url(service)) as second:
            await wait_for(second, is_update("cpu"))  # the cached value, at once
            code, status = await get_json(f"{service.http_url}/api/websocket/status")
    assert code == 200
    handed = [connection["broadcastCount"] for connection in status["connections"]]
    assert handed == [1, 1]
    assert status["summary"]["totalBroadcasts"] == sum(handed)


async def test_websocket_is_unhealthy_at_capacity(start_service: StartService) -> None:
    service = await start_service(default_topics="", max_connections=1)
    _, health = await get_json(f"{service.http_url}/health")
    assert health["services"]["websocket"]["healthy"] is True
    async with connect(ws_url(service)) as ws:
        await next_message(ws)
        _, health = await get_json(f"{service.http_url}/health")
        assert health["services"]["websocket"]["healthy"] is False
        assert health["services"]["websocket"]["activeConnections"] == 1
