"""Tenant channels against a real influxd, without sockets: the broadcast loop's ticks on the
in-memory hub, its InfluxQL source pointed at the test's database.

The connections are in memory (their identities set as the auth gate sets them) because this
is about which rows each tenant's query selects; tests/test_tenants_e2e.py does the same over
real WebSocket clients with real tokens.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from broadcaster.auth.identity import Identity
from broadcaster.broadcast.loop import BroadcastLoop
from broadcaster.broadcast.topics import Topic, series_data
from broadcaster.sources.health import SourceHealth
from broadcaster.sources.influxql import InfluxQLSource
from broadcaster.ws.connection import Connection
from tests.fakes import PolicyHub, make_hub, open_connection, sent_messages
from tests.influxd import Influxd

TOPICS = {
    "sales": Topic(
        name="sales",
        query='SELECT last(v) AS v FROM sales WHERE "tenant" = {tenant}',
        shape=series_data,
    ),
}


def tenant_connection(hub: PolicyHub, tenant: str) -> Connection:
    identity = Identity(sub=f"user-{tenant}", tenant=tenant, topics=None, expires_at_unix_s=0)
    connection = open_connection(hub, identity)
    hub.subscribe(connection, ("sales",))
    return connection


def sales_values(connection: Connection) -> list[Any]:
    return [
        row["v"]
        for message in sent_messages(connection)
        if message["type"] == "metrics_update"
        for series in message["data"]["series"]
        for row in series["rows"]
    ]


async def test_each_tenants_query_selects_only_its_rows(influxd: Influxd, influx_db: str) -> None:
    now_ns = time.time_ns()
    influxd.write(
        influx_db,
        f"sales,tenant=acme v=10 {now_ns}\n"
        f"sales,tenant=globex v=20 {now_ns}\n"
        f"sales,tenant=initech v=30 {now_ns}\n",
    )
    hub = make_hub(list(TOPICS), tenant_topics=["sales"])
    async with httpx.AsyncClient(timeout=10) as client:
        source = InfluxQLSource(client, influxd.url, influx_db)
        health = SourceHealth(source, max_age_s=20, ping_timeout_s=5)
        loop = BroadcastLoop(hub, source, TOPICS, health, interval_s=10, query_timeout_s=5)
        acme = [tenant_connection(hub, "acme") for _ in range(2)]
        globex = tenant_connection(hub, "globex")
        for _ in range(2):
            await loop.tick()
            for connection in acme:
                assert sales_values(connection) == [10]
            assert sales_values(globex) == [20]
    # One query per tenant per tick, however many connections the tenant has.
    assert loop.states["sales"].queries == 4
    assert loop.states["sales"].failures == 0
