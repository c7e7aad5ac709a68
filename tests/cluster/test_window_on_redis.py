"""Window topics in a cluster, on a real redis-server: one query per window per tick for all
the nodes, the same window (and numbering) on every node, a node that joins takes the window
from Redis without a query, and a node that missed an append takes it again.

Nodes are broadcast loops in one process with in-memory connections, and the source is
tests/fakes.py's ``FakeSource`` (a window read gets one row in its newest second): what is
under test is how the nodes share a window through Redis. The test drives the ticks itself
(``refresh(channel, tick_id)``), so the loops only answer first subscribers' requests (their
own ticks are an hour apart). Real clock (Redis is real): waits under deadlines.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from broadcaster.broadcast.loop import BroadcastLoop
from broadcaster.broadcast.topics import Topic, series_data
from broadcaster.broadcast.window import WindowSpec
from broadcaster.channels import Channel
from broadcaster.client.window import apply_append
from broadcaster.cluster.broker import Publication
from broadcaster.cluster.redis_broker import RedisBroker
from broadcaster.sources.health import SourceHealth
from broadcaster.ws.connection import Connection
from tests.fakes import FakeSource, make_hub, open_connection, sent_messages
from tests.redis_server import RedisServer
from tests.wsclient import eventually

INTERVAL_S = 3600.0  # the loops' own ticks never come during a test
HISTORY = Topic(
    name="history",
    query="SELECT n FROM m WHERE $timeFilter GROUP BY time(1s)",
    shape=series_data,
    window=WindowSpec.parse("1m", "1s"),
)
CHANNEL = Channel("history", None)


class Node:
    """A loop, its broker and one client subscribed to ``history``; what the client got."""

    def __init__(self, loop: BroadcastLoop, broker: RedisBroker, client: Connection) -> None:
        self.loop, self.broker, self.client = loop, broker, client
        self.got: list[dict[str, Any]] = []

    def received(self) -> list[dict[str, Any]]:
        self.got += [m for m in sent_messages(self.client) if m.get("topic") == "history"]
        return self.got

    def window(self) -> dict[str, Any]:
        state = self.loop.channels[CHANNEL]
        assert state.window is not None
        return state.window.window.whole()


@asynccontextmanager
async def cluster(redis: RedisServer, source: FakeSource) -> AsyncIterator[Any]:
    """``start(name)``: a node on ``redis`` whose client subscribes to ``history``."""
    async with trio.open_nursery() as nursery:

        async def start(name: str) -> Node:
            hub = make_hub(["history"])
            broker = RedisBroker(redis.url, cluster="w", node_id=name, interval_s=INTERVAL_S)
            health = SourceHealth(source, max_age_s=60, ping_timeout_s=1)
            loop = BroadcastLoop(
                hub,
                source,
                {"history": HISTORY},
                health,
                interval_s=INTERVAL_S,
                query_timeout_s=1,
                broker=broker,
            )
            await nursery.start(broker.run)
            await eventually(lambda: broker.mode == "cluster")
            await nursery.start(loop.run)
            client = open_connection(hub)
            sent_messages(client)  # the welcome
            hub.subscribe(client, ("history",))
            return Node(loop, broker, client)

        yield start
        nursery.cancel_scope.cancel()


async def tick(nodes: list[Node], tick_id: int, watching: list[Node] | None = None) -> None:
    """Every node of ``nodes`` refreshes the channel for ``tick_id`` (one wins the lease);
    then every node of ``watching`` (default: ``nodes``) has delivered what was published,
    and its client's messages are read (a connection without a socket keeps only the latest
    message of a topic)."""
    async with trio.open_nursery() as nursery:
        for node in nodes:
            nursery.start_soon(node.loop.refresh, CHANNEL, tick_id)
    published = max(node.loop.channels[CHANNEL].seq for node in nodes)
    watching = nodes if watching is None else watching

    def delivered() -> bool:
        return all(n.loop.channels[CHANNEL].seq == published and n.received() for n in watching)

    await eventually(delivered)


def window_queries(source: FakeSource) -> int:
    return sum("time >= " in statements for _, statements in source.calls)


async def test_one_query_per_tick_for_the_cluster_and_the_same_window_on_every_node(
    redis_server: RedisServer,
) -> None:
    source = FakeSource()
    async with cluster(redis_server, source) as start:
        a = await start("a")
        await eventually(lambda: bool(a.received()))  # a's first subscriber: the whole read
        b = await start("b")  # joins: the window from Redis, no query
        await eventually(lambda: bool(b.received()))
        assert window_queries(source) == 1
        for tick_id in range(1, 5):
            await trio.sleep(1.0)  # a new second: a new row
            await tick([a, b] if tick_id % 2 else [b, a], tick_id)
        assert window_queries(source) == 1 + 4  # one per tick, whoever won it
        await eventually(lambda: len(b.received()) == len(a.received()) == 5)
    assert a.received() == b.received()  # the same frames, the same seq
    kinds = [(m["type"], m["seq"]) for m in a.received()]
    assert kinds == [("metrics_update", 1)] + [("metrics_append", s) for s in range(2, 6)]
    assert a.window() == b.window()
    # What a client holds after merging the appends is each node's window.
    held = a.received()[0]["data"]
    for append in a.received()[1:]:
        held = apply_append(held, append["data"])
    assert held["series"] == a.window()["series"]
    assert len(held["series"][0]["values"]) == 5


async def test_a_node_that_joins_gets_the_whole_window_from_redis_without_a_query(
    redis_server: RedisServer,
) -> None:
    source = FakeSource()
    async with cluster(redis_server, source) as start:
        a = await start("a")
        await eventually(lambda: bool(a.received()))
        for tick_id in range(1, 3):
            await trio.sleep(1.0)
            await tick([a], tick_id)
        queries = window_queries(source)
        c = await start("c")
        await eventually(lambda: bool(c.received()))
        assert window_queries(source) == queries
        [whole] = c.received()
        assert whole["type"] == "metrics_update"
        assert whole["seq"] == a.received()[-1]["seq"]
        assert whole["data"] == a.window() | {"series": whole["data"]["series"]}
        assert whole["data"]["series"] == a.window()["series"]
        # c follows the appends from there.
        await trio.sleep(1.0)
        await tick([c, a], 3)
        assert c.received()[-1]["type"] == "metrics_append"
        assert c.received()[-1] == a.received()[-1]
        assert c.window() == a.window()


async def test_a_node_that_missed_an_append_takes_the_window_again(
    redis_server: RedisServer,
) -> None:
    source = FakeSource()
    async with cluster(redis_server, source) as start:
        a = await start("a")
        await eventually(lambda: bool(a.received()))
        b = await start("b")
        await eventually(lambda: bool(b.received()))
        # b loses one publication (as when its subscription to Redis drops one).
        deliver, missed = b.broker.on_publication, list[Publication]()
        b.broker.on_publication = missed.append
        await trio.sleep(1.0)
        await tick([a], 1)
        await eventually(lambda: bool(missed))
        b.broker.on_publication = deliver
        assert b.loop.channels[CHANNEL].seq == 1
        seen = len(b.received())
        # The next append does not follow b's window: b takes the window again from Redis
        # and its client gets it whole, at the seq of the append it could not merge.
        await trio.sleep(1.0)
        await tick([a], 2, watching=[a, b])
        await eventually(lambda: len(b.received()) > seen)
        recovered = b.received()[-1]
        assert recovered["type"] == "metrics_update"
        assert recovered["seq"] == a.received()[-1]["seq"]
        assert recovered["data"]["series"] == a.window()["series"]
        assert b.window() == a.window()
        # And b merges the appends that follow, whichever node queries.
        await trio.sleep(1.0)
        await tick([b, a], 3)
        assert b.received()[-1] == a.received()[-1]
        assert b.received()[-1]["type"] == "metrics_append"
    assert window_queries(source) == 1 + 3


async def test_a_publication_that_is_not_a_window_breaks_nothing(
    redis_server: RedisServer,
) -> None:
    """A frame on the cluster's channel that claims to be an append but is not (a bug or a
    foreign writer): every node logs it, drops it, and reads the window whole again; the
    nodes and their clients go on. (The first subscribers' refresh lease lasts the test's
    hour-long interval, so the recovery comes with the next tick here.)"""
    source = FakeSource()
    async with cluster(redis_server, source) as start:
        a = await start("a")
        await eventually(lambda: bool(a.received()))
        b = await start("b")
        await eventually(lambda: bool(b.received()))
        claim = await a.broker.claim(CHANNEL, 7)
        assert claim is not None
        bogus = '{"type":"metrics_append","topic":"history","data":[1,2]}'
        assert await a.broker.publish(Publication(CHANNEL, claim.seq, claim.epoch, None, bogus))
        # Neither node delivers it; the next tick's winner reads the window whole again
        # (its window no longer follows the numbering) and every node takes that.
        await trio.sleep(1.0)
        await tick([a, b], 8)
        for node in (a, b):
            assert node.received()[-1]["type"] == "metrics_update"
            assert node.received()[-1]["seq"] == claim.seq + 1
        assert a.window() == b.window()
        # And the appends go on.
        await trio.sleep(1.0)
        await tick([b, a], 9)
        assert a.received()[-1] == b.received()[-1]
        assert a.received()[-1]["type"] == "metrics_append"
