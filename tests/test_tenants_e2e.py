"""Tenant isolation end to end: rows of two tenants in a real influxd, a topics file with a
``{tenant}`` topic, the whole service with ``--auth-mode jwt``, real WebSocket clients holding
tokens signed per run (HS256). Each tenant gets only its own rows; a token without a tenant,
or a topic outside the token's ``topics``, gets ``forbidden_topic``; a tenant claim carrying
a quote never reaches a query (the token is refused).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from broadcaster.service import RunningService
from tests.influxd import Influxd
from tests.jwt_keys import AUDIENCE, ISSUER, SigningKey, claims, hs256_key
from tests.services import StartServiceOnInfluxd
from tests.wsclient import JSON, connect, is_update, next_message, send_json, wait_for

TOPICS_FILE = """\
[[topic]]
name = "sales"
query = 'SELECT last(v) AS v FROM sales WHERE "tenant" = {tenant}'

[[topic]]
name = "sales-total"
query = 'SELECT sum(v) AS v FROM sales'
"""


async def start(
    start_service_on_influxd: StartServiceOnInfluxd, key: SigningKey, scratch: Path
) -> RunningService:
    topics_file = scratch / "topics.toml"
    topics_file.write_text(TOPICS_FILE)
    return await start_service_on_influxd(
        auth_mode="jwt",
        jwt_secret_file=str(key.key_file),
        jwt_audience=AUDIENCE,
        jwt_issuer=ISSUER,
        topics_file=str(topics_file),
        default_topics="",
        broadcast_interval_ms=200,
    )


def ws_url(service: RunningService) -> str:
    return f"ws://127.0.0.1:{service.websocket.port}/ws"


def write_sales(influxd: Influxd, database: str) -> None:
    now_ns = time.time_ns()
    influxd.write(
        database,
        f"sales,tenant=acme v=10 {now_ns}\n"
        f"sales,tenant=globex v=20 {now_ns}\n"
        f"sales,tenant=initech v=30 {now_ns}\n",
    )


def sales_values(update: JSON) -> list[Any]:
    return [row["v"] for series in update["data"]["series"] for row in series["rows"]]


async def authenticated(ws: WebSocketConnection, token: str) -> JSON:
    """Send the token as the first message (as a browser does); the welcome."""
    await send_json(ws, {"type": "auth", "token": token})
    welcome = await next_message(ws)
    assert welcome["type"] == "welcome"
    return welcome


async def close_code(ws: WebSocketConnection) -> int:
    """Read until the server closes; its close code."""
    with trio.fail_after(10):
        while True:
            try:
                await ws.get_message()
            except ConnectionClosed as closed:
                reason = closed.reason
                break
    assert reason is not None
    return reason.code


async def test_two_tenants_on_one_topic_each_get_only_their_own_rows(
    start_service_on_influxd: StartServiceOnInfluxd,
    influxd: Influxd,
    influx_db: str,
    scratch: Path,
) -> None:
    write_sales(influxd, influx_db)
    key = hs256_key(scratch)
    service = await start(start_service_on_influxd, key, scratch)
    acme_header = [(b"Authorization", f"Bearer {key.sign(**claims(tenant='acme'))}".encode())]
    async with (
        connect(ws_url(service), extra_headers=acme_header) as acme,
        connect(ws_url(service)) as globex,
    ):
        acme_welcome = await next_message(acme)
        globex_welcome = await authenticated(globex, key.sign(**claims(sub="bob", tenant="globex")))
        assert acme_welcome["identity"] == {"sub": "alice", "tenant": "acme"}
        assert globex_welcome["identity"] == {"sub": "bob", "tenant": "globex"}
        assert "sales" in acme_welcome["topics"]
        assert acme_welcome["topics"] == globex_welcome["topics"]
        for ws in (acme, globex):
            await send_json(ws, {"type": "subscribe", "topics": ["sales"]})
        for ws, expected in ((acme, 10), (globex, 20)):
            # Three updates each: the first subscriber's query, then ticks of its own channel.
            for _ in range(3):
                update = await wait_for(ws, is_update("sales"), timeout_s=15)
                assert sales_values(update) == [expected]
        # Subscribers and queries stay per topic: no tenant name in the metrics.
        async with httpx.AsyncClient(timeout=10) as client:
            metrics = (await client.get(f"{service.http_url}/metrics")).text
        assert 'broadcaster_topic_subscribers{topic="sales"} 2.0' in metrics
        assert "acme" not in metrics
        assert "globex" not in metrics


async def test_without_a_tenant_or_outside_the_topics_claim_is_forbidden(
    start_service_on_influxd: StartServiceOnInfluxd,
    influxd: Influxd,
    influx_db: str,
    scratch: Path,
) -> None:
    write_sales(influxd, influx_db)
    key = hs256_key(scratch)
    service = await start(start_service_on_influxd, key, scratch)
    async with (
        connect(ws_url(service)) as no_tenant,
        connect(ws_url(service)) as limited,
    ):
        welcome = await authenticated(no_tenant, key.sign(**claims()))
        assert "sales-total" in welcome["topics"]
        assert "sales" not in welcome["topics"]  # a tenant topic, and no tenant
        await send_json(no_tenant, {"type": "subscribe", "topics": ["sales", "sales-total"]})
        error = await next_message(no_tenant)
        assert (error["type"], error["code"], error["topics"]) == (
            "error",
            "forbidden_topic",
            ["sales"],
        )
        confirmed = await next_message(no_tenant)
        assert confirmed == {"type": "subscription_confirmed", "topics": ["sales-total"]}
        total = await wait_for(no_tenant, is_update("sales-total"), timeout_s=15)
        assert sales_values(total) == [60]  # a topic for everyone sees every row

        token = key.sign(**claims(tenant="acme", topics=["sales"]))
        welcome = await authenticated(limited, token)
        assert welcome["topics"] == ["sales"]
        await send_json(limited, {"type": "subscribe", "topics": ["sales-total"]})
        error = await next_message(limited)
        assert (error["code"], error["topics"]) == ("forbidden_topic", ["sales-total"])
        assert service.hub.counters.forbidden_subscriptions == 2


async def test_a_tenant_claim_with_a_quote_is_refused_before_any_query(
    start_service_on_influxd: StartServiceOnInfluxd,
    influxd: Influxd,
    influx_db: str,
    scratch: Path,
) -> None:
    write_sales(influxd, influx_db)
    key = hs256_key(scratch)
    service = await start(start_service_on_influxd, key, scratch)
    async with connect(ws_url(service)) as ws:
        await send_json(ws, {"type": "auth", "token": key.sign(**claims(tenant="acme' OR 1=1"))})
        assert await close_code(ws) == 4001
    assert service.loop.states["sales"].queries == 0
