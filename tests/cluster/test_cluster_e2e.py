"""The cluster end to end: three real service processes started by their documented flags
(``--redis-url``, ``--node-id``), a real redis-server, a real influxd whose own ``SHOW STATS``
``queryReq`` counts the queries, and real WebSocket clients on every node.

Real clock: every wait is under a deadline (``eventually``, ``fail_after``); the only sleeps
are the things under test ("no query for two intervals").

Counting queries exactly: a claim takes a seq and is always followed by one query, so at a
*quiet* moment (every seq Redis handed out has reached the clients: no query in flight) the
queries since the last quiet moment must equal the seqs handed out since, per topic.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import coredis
import orjson
import pytest
import trio

from broadcaster.client import ReconnectPolicy, open_client
from tests.cluster.nodes import TOPICS, Cluster, Node, Recorder, record_client
from tests.influxd import Influxd
from tests.redis_server import RedisServer
from tests.wsclient import eventually

CLIENTS_PER_NODE = 20
INTERVAL_S = 1.0


@pytest.fixture
def cluster(
    influxd: Influxd, influx_db: str, redis_server: RedisServer, tmp_path: Path
) -> Iterator[Cluster]:
    influxd.write(influx_db, "cpu v=1\nmem v=2")
    started = Cluster(influxd, influx_db, redis_server, tmp_path)
    yield started
    started.stop_all()


async def redis_seqs(redis: coredis.Redis[bytes]) -> dict[str, int]:
    """The seq Redis handed out last, per topic (the cluster's own counters)."""
    keys = [f"broadcaster:seq:{orjson.dumps([topic, None]).decode()}" for topic in TOPICS]
    values = await redis.mget(keys)
    return {topic: int(v) if v is not None else 0 for topic, v in zip(TOPICS, values, strict=True)}


async def quiet_snapshot(
    cluster: Cluster, redis: coredis.Redis[bytes], recorders: list[Recorder]
) -> tuple[dict[str, int], int]:
    """(seq per topic, queryReq) at a moment when no query is in flight: every client has
    the seqs Redis handed out, and they did not move while queryReq was read."""
    found: list[tuple[dict[str, int], int]] = []

    async def quiet() -> bool:
        before = await redis_seqs(redis)
        if any(r.last_seq(t) != before[t] for r in recorders for t in TOPICS):
            return False
        queries = await trio.to_thread.run_sync(cluster.query_requests)
        if await redis_seqs(redis) != before:
            return False
        found.append((before, queries))
        return True

    await eventually(quiet, timeout_s=20)
    return found[0]


def assert_one_numbering(recorders: list[Recorder], first_seq: dict[str, int]) -> None:
    """In the numbering of its last update, every client got the same epoch and no gap from
    ``first_seq`` (or its first update of that epoch) to its last update."""
    for topic in TOPICS:
        epochs: set[str] = set()
        for recorder in recorders:
            current = recorder.updates[topic][-1][0]
            got = [
                (e, s) for e, s in recorder.updates[topic] if e == current and s >= first_seq[topic]
            ]
            seqs = [s for _, s in got]
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), (recorder.name, seqs)
            epochs |= {e for e, _ in got}
        assert len(epochs) == 1, (topic, epochs)


async def start_clients(nursery: trio.Nursery, nodes: list[Node], per_node: int) -> list[Recorder]:
    recorders = []
    for node in nodes:
        for number in range(per_node):
            recorder = Recorder(f"{node.node_id}/{number}")
            recorders.append(recorder)
            await nursery.start(record_client, node.ws_url, recorder)
    return recorders


async def test_three_nodes_one_query_per_topic_per_tick_and_one_numbering(
    cluster: Cluster, redis_client: coredis.Redis[bytes]
) -> None:
    nodes = await cluster.start_ready("n1", "n2", "n3")
    # No subscribers anywhere: no queries at all.
    idle_before = await trio.to_thread.run_sync(cluster.query_requests)
    await trio.sleep(2.5 * INTERVAL_S)  # the thing under test: nothing happens
    assert await trio.to_thread.run_sync(cluster.query_requests) == idle_before

    async with trio.open_nursery() as nursery:
        recorders = await start_clients(nursery, nodes, CLIENTS_PER_NODE)
        assert {r.welcome["nodeId"] for r in recorders} == {"n1", "n2", "n3"}
        assert {r.welcome["cluster"] for r in recorders} == {"broadcaster"}
        seq_a, queries_a = await quiet_snapshot(cluster, redis_client, recorders)
        started = trio.current_time()
        await eventually(
            lambda: all(r.last_seq(t) >= seq_a[t] + 4 for r in recorders for t in TOPICS),
            timeout_s=30,
        )
        seq_b, queries_b = await quiet_snapshot(cluster, redis_client, recorders)
        elapsed_s = trio.current_time() - started
        nursery.cancel_scope.cancel()

    ticks = {topic: seq_b[topic] - seq_a[topic] for topic in TOPICS}
    assert min(ticks.values()) >= 4
    # One seq per tick (not one per node and tick): no more seqs than tick ids in that time
    # (+2: the tick ids at both ends, rounded to the nearest).
    assert max(ticks.values()) <= elapsed_s / INTERVAL_S + 2
    # Exactly one query per topic per tick for the whole cluster, not one per node.
    assert queries_b - queries_a == sum(ticks.values())
    assert_one_numbering(recorders, seq_a)
    assert all("topic query failed" not in n.log() for n in nodes)


async def last_querier(redis: coredis.Redis[bytes]) -> str:
    """The node holding the newest tick lease of ``cpu`` (the one that queried last)."""
    prefix = f"broadcaster:lease:{orjson.dumps(['cpu', None]).decode()}:"
    keys = [k.decode() async for k in redis.scan_iter(match=prefix.replace("[", "\\[") + "*")]
    newest = max(keys, key=lambda k: int(k.rsplit(":", 1)[1]))
    holder = await redis.get(newest)
    assert holder is not None
    return holder.decode()


async def wait_for_next_tick(recorders: list[Recorder]) -> dict[str, int]:
    """Wait until every client has a newer seq of every topic than now; return those seqs."""
    now = {t: max(r.last_seq(t) for r in recorders) for t in TOPICS}
    await eventually(
        lambda: all(r.last_seq(t) > now[t] for r in recorders for t in TOPICS), timeout_s=15
    )
    return {t: min(r.last_seq(t) for r in recorders) for t in TOPICS}


async def test_a_new_subscriber_gets_the_latest_value_at_once_on_a_node_that_never_had_it(
    cluster: Cluster,
) -> None:
    # Ticks are aligned to the wall clock (k * interval + 1 s): with a 60 s interval one fell
    # inside this test once a minute. A day's interval leaves only the subscription's refresh.
    slow = {"broadcast_interval_ms": 86_400_000, "default_topics": ""}
    (n1,) = await cluster.start_ready("n1", **slow)
    async with trio.open_nursery() as nursery:
        first = Recorder("n1")
        await nursery.start(partial(record_client, n1.ws_url, first, subscribe=("cpu",)))
        await eventually(lambda: bool(first.updates["cpu"]))
        # n2 starts after the value was published: only Redis has it.
        (n2,) = await cluster.start_ready("n2", **slow)
        before = await trio.to_thread.run_sync(cluster.query_requests)
        second = Recorder("n2")
        await nursery.start(partial(record_client, n2.ws_url, second, subscribe=("cpu",)))
        # At once: well within the interval, generous for a loaded machine.
        await eventually(lambda: bool(second.updates["cpu"]), timeout_s=5)
        assert second.updates["cpu"] == first.updates["cpu"]  # the same (epoch, seq)
        assert await trio.to_thread.run_sync(cluster.query_requests) == before  # no query
        nursery.cancel_scope.cancel()


async def test_kill_9_of_the_node_that_queried_last_costs_the_others_no_tick(
    cluster: Cluster, redis_client: coredis.Redis[bytes]
) -> None:
    nodes = await cluster.start_ready("n1", "n2", "n3")
    by_id = {node.node_id: node for node in nodes}
    async with trio.open_nursery() as nursery:
        recorders = await start_clients(nursery, nodes, 3)
        await wait_for_next_tick(recorders)
        await wait_for_next_tick(recorders)
        victim = by_id[await last_querier(redis_client)]
        home = next(node for node in nodes if node is not victim)
        # The shipped Python client, given every node: it is on the victim now, and moves.
        shipped = await nursery.start(follow_with_the_python_client, [victim.ws_url, home.ws_url])
        victim.kill()
        survivors = [r for r in recorders if not r.name.startswith(victim.node_id + "/")]
        await eventually(
            lambda: all(r.closed for r in recorders if r not in survivors), timeout_s=10
        )
        killed_at = {t: max(r.last_seq(t) for r in survivors) for t in TOPICS}
        await eventually(
            lambda: all(r.last_seq(t) >= killed_at[t] + 3 for r in survivors for t in TOPICS),
            timeout_s=15,
        )
        assert await last_querier(redis_client) != victim.node_id
        # A client of the dead node that reconnects elsewhere gets the latest value at once.
        with trio.fail_after(15):  # its backoff, then the latest value at once
            await shipped.moved.wait()
        assert shipped.seqs_after_move[0] >= killed_at["cpu"]
        moved = Recorder("moved")
        await nursery.start(record_client, home.ws_url, moved)
        with trio.fail_after(5):
            await eventually(lambda: all(moved.updates[t] for t in TOPICS))
        nursery.cancel_scope.cancel()
    assert_one_numbering(survivors, {t: 1 for t in TOPICS})


@dataclass
class ShippedClient:
    """What the Python client given a list of node URLs saw: its updates of ``cpu`` on the
    first node, then after its first reconnection (which goes to the next URL)."""

    seqs_before_move: list[int] = field(default_factory=list)
    seqs_after_move: list[int] = field(default_factory=list)
    moved: trio.Event = field(default_factory=trio.Event)


async def follow_with_the_python_client(
    urls: list[str], *, task_status: trio.TaskStatus[ShippedClient]
) -> None:
    seen = ShippedClient()
    policy = ReconnectPolicy(base_delay_s=0.2, max_delay_s=0.5, max_attempts=100)
    async with open_client(urls, ["cpu"], reconnect=policy) as client:
        async for update in client:
            if client.status.connection_id is None:
                continue
            if not seen.seqs_before_move:
                first_connection = client.status.connection_id
                task_status.started(seen)
            if client.status.connection_id == first_connection:
                seen.seqs_before_move.append(update.seq)
            else:
                seen.seqs_after_move.append(update.seq)
                seen.moved.set()


async def test_redis_loss_keeps_clients_served_and_the_cluster_comes_back_by_itself(
    cluster: Cluster, redis_client: coredis.Redis[bytes]
) -> None:
    nodes = await cluster.start_ready("n1", "n2", "n3")
    async with trio.open_nursery() as nursery:
        recorders = await start_clients(nursery, nodes, 3)
        await wait_for_next_tick(recorders)
        cluster.redis.stop()
        for node in nodes:
            await eventually(lambda n=node: _mode_is(n, "local"), timeout_s=10)  # type: ignore[misc]
        status, health = await nodes[0].get("/health")
        assert status == 200  # Redis down alone: no 503 for the load balancer
        assert health["services"]["redis"]["healthy"] is False
        assert health["services"]["redis"]["lastError"]
        for _ in range(3):
            await wait_for_next_tick(recorders)  # every client still gets every topic
        _, metrics = await nodes[0].get_text("/metrics")
        assert _metric(metrics, "broadcaster_cluster_fallback_queries_total") > 0

        cluster.redis.start()
        for node in nodes:
            await eventually(lambda n=node: _mode_is(n, "cluster"), timeout_s=20)  # type: ignore[misc]
        await wait_for_next_tick(recorders)
        seq_a, queries_a = await quiet_snapshot(cluster, redis_client, recorders)
        await eventually(
            lambda: all(r.last_seq(t) >= seq_a[t] + 3 for r in recorders for t in TOPICS),
            timeout_s=30,
        )
        seq_b, queries_b = await quiet_snapshot(cluster, redis_client, recorders)
        nursery.cancel_scope.cancel()
    assert not any(r.closed for r in recorders)  # the same connections throughout
    assert queries_b - queries_a == sum(seq_b[t] - seq_a[t] for t in TOPICS)
    assert_one_numbering(recorders, seq_a)
    assert all(node.process.poll() is None for node in nodes)  # no node restarted


async def test_cluster_status_lists_the_live_nodes_and_drops_dead_ones(cluster: Cluster) -> None:
    nodes = await cluster.start_ready("n1", "n2", "n3")
    n1, n2, n3 = nodes
    async with trio.open_nursery() as nursery:
        await start_clients(nursery, [n1], 2)
        await eventually(lambda: _node_ids(n1, ["n1", "n2", "n3"]))

        async def counts_both_clients() -> bool:  # presences are refreshed every second
            _, body = await n1.get("/api/cluster/status")
            return bool(body["summary"] == {"nodes": 3, "activeConnections": 2})

        await eventually(counts_both_clients, timeout_s=5)
        status, body = await n1.get("/api/cluster/status")
        assert status == 200
        assert body["cluster"] == "broadcaster"
        first = body["nodes"][0]
        assert set(first) == {
            "id",
            "wsUrl",
            "httpUrl",
            "activeConnections",
            "subscribers",
            "lastSeen",
        }
        assert first["wsUrl"] == n1.ws_url
        assert (first["subscribers"]["cpu"], first["subscribers"]["mem"]) == (2, 2)
        _, health = await n1.get("/health")
        assert health["services"]["redis"] == {
            "healthy": True,
            "mode": "cluster",
            "lastError": None,
        }

        n3.kill()  # stops refreshing its presence: gone within a few seconds
        await eventually(lambda: _node_ids(n1, ["n1", "n2"]), timeout_s=10)
        assert await n2.terminate() == 0  # a graceful stop leaves the list at once
        status, body = await n1.get("/api/cluster/status")
        assert [n["id"] for n in body["nodes"]] == ["n1"]
        nursery.cancel_scope.cancel()


async def test_a_graceful_stop_of_the_node_that_queried_last_costs_the_others_no_tick(
    cluster: Cluster, redis_client: coredis.Redis[bytes]
) -> None:
    nodes = await cluster.start_ready("n1", "n2", "n3")
    by_id = {node.node_id: node for node in nodes}
    async with trio.open_nursery() as nursery:
        recorders = await start_clients(nursery, nodes, 2)
        await wait_for_next_tick(recorders)
        leaving = by_id[await last_querier(redis_client)]
        assert await leaving.terminate() == 0
        survivors = [r for r in recorders if not r.name.startswith(leaving.node_id + "/")]
        stopped_at = {t: max(r.last_seq(t) for r in survivors) for t in TOPICS}
        await eventually(
            lambda: all(r.last_seq(t) >= stopped_at[t] + 3 for r in survivors for t in TOPICS),
            timeout_s=15,
        )
        nursery.cancel_scope.cancel()
    assert_one_numbering(survivors, {t: 1 for t in TOPICS})


async def _mode_is(node: Node, mode: str) -> bool:
    return await node.mode() == mode


async def _node_ids(node: Node, expected: list[str]) -> bool:
    _, body = await node.get("/api/cluster/status")
    return [n["id"] for n in body["nodes"]] == expected


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")
