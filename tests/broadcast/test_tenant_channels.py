"""The broadcast loop with tenant topics: one query per (topic, tenant) per tick, each tenant's
values to its own connections only, failures contained to a channel, empty channels forgotten.

In memory and in virtual time (exact counts at exact ticks); the source is an in-process
fake that echoes the statement it ran, so each value says which tenant's query made it. The
same isolation against a real influxd: tests/test_tenants_e2e.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import trio
import trio.testing

from broadcaster.auth.identity import Identity
from broadcaster.broadcast.loop import BroadcastLoop
from broadcaster.broadcast.topics import Topic
from broadcaster.channels import Channel
from broadcaster.errors import SourceUnavailable
from broadcaster.sources.base import Series, StatementResult
from broadcaster.sources.health import SourceHealth
from broadcaster.ws.connection import Connection
from tests.fakes import PolicyHub, VirtualWallClock, make_hub, open_connection, sent_messages

INTERVAL_S = 10.0
SALES_QUERY = "SELECT last(v) FROM sales WHERE tenant = {tenant}"
TOPICS = {
    "sales": Topic(name="sales", query=SALES_QUERY, shape=lambda r: _statement_of(r)),
    "overview": Topic(name="overview", query="SELECT 1", shape=lambda r: _statement_of(r)),
}


class EchoSource:
    """Answers every statement with itself, so a value names the query that made it; refuses
    the statements in ``down``."""

    def __init__(self) -> None:
        self.statements: list[str] = []
        self.down: set[str] = set()

    async def query(self, statements: str) -> list[StatementResult]:
        await trio.lowlevel.checkpoint()
        self.statements.append(statements)
        if statements in self.down:
            raise SourceUnavailable("InfluxDB at fake unreachable: connection refused")
        return [StatementResult((Series(name="m", columns=("q",), values=((statements,),)),))]

    async def ping(self) -> None:
        await trio.lowlevel.checkpoint()

    def count(self, statement: str) -> int:
        return self.statements.count(statement)


def _statement_of(results: Sequence[StatementResult]) -> Any:
    return results[0].series[0].values[0][0]


def sales_query(tenant: str) -> str:
    return SALES_QUERY.replace("{tenant}", f"'{tenant}'")


def setup() -> tuple[PolicyHub, EchoSource, BroadcastLoop]:
    hub = make_hub(list(TOPICS), tenant_topics=["sales"])
    source = EchoSource()
    health = SourceHealth(source, max_age_s=2 * INTERVAL_S, ping_timeout_s=5)
    loop = BroadcastLoop(
        hub,
        source,
        TOPICS,
        health,
        interval_s=INTERVAL_S,
        query_timeout_s=5,
        wall_clock=VirtualWallClock(),  # ticks at start + k * interval (tests/fakes.py)
    )
    return hub, source, loop


def tenant_connection(hub: PolicyHub, tenant: str | None, *topics: str) -> Connection:
    connection = open_connection(
        hub, Identity(sub=f"user-of-{tenant}", tenant=tenant, topics=None, expires_at_unix_s=0)
    )
    hub.subscribe(connection, topics)
    return connection


class Reader:
    """Reads what each connection is sent, every second, as a client that keeps up would (a
    connection nobody reads keeps only its newest update per topic)."""

    def __init__(self) -> None:
        self.received: dict[Connection, list[dict[str, Any]]] = {}

    def follow(self, connection: Connection) -> Connection:
        self.received[connection] = []
        return connection

    def read_now(self) -> None:
        for connection, messages in self.received.items():
            messages.extend(sent_messages(connection))

    async def run(self) -> None:
        while True:
            await trio.sleep(1)
            self.read_now()

    def updates(self, connection: Connection, topic: str = "sales") -> list[dict[str, Any]]:
        self.read_now()
        return [
            m
            for m in self.received[connection]
            if m["type"] == "metrics_update" and m["topic"] == topic
        ]

    def errors(self, connection: Connection) -> list[str]:
        self.read_now()
        return [m["code"] for m in self.received[connection] if m["type"] == "error"]


async def run_for(loop: BroadcastLoop, reader: Reader, seconds: float) -> None:
    """Run the loop and the reader for ``seconds`` of virtual time."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader.run)
        with trio.move_on_after(seconds):
            await loop.run()
        nursery.cancel_scope.cancel()


async def test_one_query_per_topic_and_tenant_per_tick_whatever_the_subscribers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub, source, loop = setup()
    reader = Reader()
    acme = [reader.follow(tenant_connection(hub, "acme", "sales", "overview")) for _ in range(3)]
    globex = [
        reader.follow(tenant_connection(hub, "globex", "sales", "overview")) for _ in range(2)
    ]
    await run_for(loop, reader, 3 * INTERVAL_S + 1)
    # Each channel once at its first subscriber, then once per tick (3 ticks).
    assert source.count(sales_query("acme")) == 4
    assert source.count(sales_query("globex")) == 4
    assert source.count("SELECT 1") == 4  # a topic for everyone stays one channel
    assert len(source.statements) == 12
    assert loop.states["sales"].queries == 8  # per topic, summed over its tenants
    for connection in acme:
        assert [u["data"] for u in reader.updates(connection)] == [sales_query("acme")] * 4
    for connection in globex:
        assert [u["data"] for u in reader.updates(connection)] == [sales_query("globex")] * 4


async def test_a_tenant_never_gets_another_tenants_update(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub, _, loop = setup()
    reader = Reader()
    acme = reader.follow(tenant_connection(hub, "acme", "sales"))
    globex = reader.follow(tenant_connection(hub, "globex", "sales"))
    await run_for(loop, reader, 5 * INTERVAL_S + 1)
    acme_updates, globex_updates = reader.updates(acme), reader.updates(globex)
    assert len(acme_updates) == len(globex_updates) == 6
    assert {u["data"] for u in acme_updates} == {sales_query("acme")}
    assert {u["data"] for u in globex_updates} == {sales_query("globex")}
    # Each tenant's seq grows by 1 per query of its channel: no gaps from the other tenant.
    for received in (acme_updates, globex_updates):
        first = received[0]["seq"]
        assert [u["seq"] for u in received] == list(range(first, first + 6))


async def test_a_new_subscriber_gets_its_own_tenants_latest_value(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub, source, loop = setup()
    reader = Reader()
    async with trio.open_nursery() as nursery:
        await nursery.start(loop.run)
        tenant_connection(hub, "acme", "sales")
        await trio.sleep(INTERVAL_S + 1)
        late_globex = reader.follow(tenant_connection(hub, "globex", "sales"))
        late_acme = reader.follow(tenant_connection(hub, "acme", "sales"))
        # acme's from the cache at once; globex's channel is new: queried at once.
        assert [u["data"] for u in reader.updates(late_acme)] == [sales_query("acme")]
        await trio.sleep(1)
        assert [u["data"] for u in reader.updates(late_globex)] == [sales_query("globex")]
        nursery.cancel_scope.cancel()
    assert source.count(sales_query("acme")) == 2  # the first subscriber's, one tick


async def test_a_failing_channel_fails_alone(autojump_clock: trio.testing.MockClock) -> None:
    hub, source, loop = setup()
    source.down.add(sales_query("acme"))
    reader = Reader()
    acme = reader.follow(tenant_connection(hub, "acme", "sales"))
    globex = reader.follow(tenant_connection(hub, "globex", "sales"))
    await run_for(loop, reader, 2 * INTERVAL_S + 1)
    assert reader.errors(acme) == ["influxdb_unavailable"] * 3
    assert reader.updates(acme) == []
    assert reader.errors(globex) == []
    assert len(reader.updates(globex)) == 3
    assert loop.states["sales"].failures == 3


async def test_a_tenant_channel_nobody_listens_to_is_forgotten_and_its_seq_never_goes_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub, source, loop = setup()
    reader = Reader()
    async with trio.open_nursery() as nursery:
        await nursery.start(loop.run)
        nursery.start_soon(reader.run)
        first = reader.follow(tenant_connection(hub, "acme", "sales"))
        tenant_connection(hub, "globex", "sales")
        await trio.sleep(2 * INTERVAL_S + 1)
        assert [u["seq"] for u in reader.updates(first)] == [1, 2, 3]
        hub.close(first)
        await trio.sleep(INTERVAL_S)  # the next tick forgets acme's channel
        assert Channel("sales", "acme") not in loop.channels
        assert Channel("sales", "globex") in loop.channels
        assert Channel("overview", None) not in loop.channels  # never subscribed
        again = reader.follow(tenant_connection(hub, "acme", "sales"))
        await trio.sleep(1)
        # A new channel starts from the topic's highest seq, not from 0: never back.
        [update] = reader.updates(again)
        assert update["seq"] > 3
        assert update["seq"] == loop.states["sales"].seq
        nursery.cancel_scope.cancel()
    assert source.count(sales_query("acme")) == 4
