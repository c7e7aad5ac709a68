"""Two broadcast loops (two nodes, in one process) on a real redis-server: what a cluster
does with a failing query, and the tick id every node computes.

The hubs' connections are in memory and the source is a ``FakeSource`` (tests/fakes.py):
the cluster's Redis steps are under test here, not sockets or InfluxDB (the end-to-end
tests in this folder have those). Real clock (Redis is real): waits under deadlines.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from broadcaster.broadcast.loop import BroadcastLoop
from broadcaster.channels import Channel
from broadcaster.cluster.redis_broker import RedisBroker
from broadcaster.sources.health import SourceHealth
from broadcaster.ws.connection import Connection
from tests.fakes import FakeSource, make_hub, make_topics, open_connection, sent_messages
from tests.redis_server import RedisServer
from tests.wsclient import eventually

INTERVAL_S = 0.3
CPU = Channel("cpu", None)


async def start_node(
    nursery: trio.Nursery, redis: RedisServer, source: FakeSource, name: str
) -> tuple[BroadcastLoop, Connection]:
    """One node (a loop, its broker, one client subscribed to ``cpu``) on ``redis``."""
    hub = make_hub(["cpu"], defaults=["cpu"])
    broker = RedisBroker(redis.url, cluster="t", node_id=name, interval_s=INTERVAL_S)
    health = SourceHealth(source, max_age_s=1, ping_timeout_s=1)
    loop = BroadcastLoop(
        hub,
        source,
        make_topics("cpu"),
        health,
        interval_s=INTERVAL_S,
        query_timeout_s=1,
        broker=broker,
    )
    await nursery.start(broker.run)
    await eventually(lambda: broker.mode == "cluster")
    return loop, open_connection(hub)


@asynccontextmanager
async def two_nodes(
    redis: RedisServer, source: FakeSource, *, ticking: bool = True
) -> AsyncIterator[list[tuple[BroadcastLoop, Connection]]]:
    """Two nodes (a loop, its broker, one client) on ``redis``; ``ticking``: their loops run
    (else the test drives ``refresh`` itself)."""
    nodes = []
    async with trio.open_nursery() as nursery:
        for name in ("a", "b"):
            nodes.append(await start_node(nursery, redis, source, name))
        for loop, _ in nodes:
            if ticking:
                nursery.start_soon(loop.run)
        yield nodes
        nursery.cancel_scope.cancel()


async def test_a_failed_query_sends_every_node_the_error_then_the_stale_value(
    redis_server: RedisServer,
) -> None:
    source = FakeSource()
    received: list[list[dict[str, Any]]] = [[], []]

    def drain(nodes: list[tuple[BroadcastLoop, Connection]]) -> None:
        for mine, (_, client) in zip(received, nodes, strict=True):
            mine.extend(sent_messages(client))

    def has(kind: str, stale: bool | None = None) -> bool:
        return all(
            any(m["type"] == kind and (stale is None or m.get("stale") is stale) for m in mine)
            for mine in received
        )

    async with two_nodes(redis_server, source) as nodes:
        await eventually(lambda: drain(nodes) or has("metrics_update", stale=False))
        source.down = True
        await eventually(lambda: drain(nodes) or has("metrics_update", stale=True), timeout_s=5)
    a, b = ([m for m in mine if m["type"] in ("metrics_update", "error")] for mine in received)
    error_at = next(i for i, m in enumerate(a) if m["type"] == "error")
    assert a[error_at]["code"] == "influxdb_unavailable"
    stale = a[error_at + 1]
    assert stale["stale"] is True
    assert stale["data"] == a[error_at - 1]["data"]  # the last good value, under a new seq
    assert stale["seq"] == a[error_at - 1]["seq"] + 1
    # The other node got the same error and the same stale frame, from the node that queried.
    assert stale in b
    assert a[error_at] in b
    # One query per seq for both nodes together.
    seqs = {m["seq"] for m in a + b if m["type"] == "metrics_update"}
    assert len(source.calls) >= max(seqs)
    assert len(source.calls) <= max(seqs) + 1  # + a claim whose result is still on its way


async def test_a_node_stopping_during_a_query_it_claimed_still_publishes_it(
    redis_server: RedisServer,
) -> None:
    source = FakeSource(delay_s=0.3)
    async with two_nodes(redis_server, source, ticking=False) as nodes:
        (leaving, _), (staying, client) = nodes
        with trio.move_on_after(0.05) as stopping:  # the node stops while its query runs
            await leaving.refresh(CPU, tick_id=1)
        assert stopping.cancel_called
        await staying.refresh(CPU, tick_id=1)  # the tick is taken: no second query
        got: list[dict[str, Any]] = []
        await eventually(lambda: bool(got.extend(sent_messages(client)) or _updates(got)))
    assert [m["seq"] for m in _updates(got)] == [1]
    assert len(source.calls) == 1


async def test_a_node_that_joined_after_the_last_good_value_resends_it_stale(
    redis_server: RedisServer,
) -> None:
    source = FakeSource()
    async with trio.open_nursery() as nursery:
        first, _ = await start_node(nursery, redis_server, source, "a")
        await first.refresh(CPU, tick_id=1)
        joined, client = await start_node(nursery, redis_server, source, "b")
        source.down = True
        await joined.refresh(CPU, tick_id=2)  # b wins tick 2; its query fails
        nursery.cancel_scope.cancel()
    got = [m for m in sent_messages(client) if m["type"] in ("error", "metrics_update")]
    assert [m["type"] for m in got] == ["error", "metrics_update"]
    assert got[1]["stale"] is True
    assert got[1]["seq"] == 2
    assert got[1]["data"] == {"n": 1}  # tick 1's value, which b never received


def _updates(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in messages if m["type"] == "metrics_update"]
