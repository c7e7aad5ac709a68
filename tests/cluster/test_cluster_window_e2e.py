"""A window topic in a cluster, end to end: two real service processes on a real
redis-server and a real influxd (a point written every second), real WebSocket clients on
both nodes merging the appends as the protocol says.

What it shows: one InfluxDB query per tick for the window, whichever node serves the client
(influxd's own ``queryReq`` against the seqs Redis handed out, counted at quiet moments as in
test_cluster_e2e); every client, on either node, gets the same numbering with no gap and
ends with the same window; a node started later gives its client the whole window at once.
Real clock: every wait is under a deadline.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import coredis
import orjson
import pytest
import trio
from trio_websocket import ConnectionClosed

from broadcaster.client.window import apply_append
from tests.cluster.nodes import Cluster
from tests.influxd import Influxd
from tests.redis_server import RedisServer
from tests.wsclient import connect, eventually, next_message, send_json

SEQ_KEY = f"broadcaster:seq:{orjson.dumps(['history', None]).decode()}"
CLIENTS_PER_NODE = 3
WINDOW_TOML = """
[[topic]]
name = "history"
kind = "window"
window = "1m"
resolution = "1s"
query = "SELECT last(n) AS n FROM m WHERE $timeFilter GROUP BY time(1s) fill(none)"
"""


@pytest.fixture
def cluster(
    influxd: Influxd, influx_db: str, redis_server: RedisServer, tmp_path: Path
) -> Iterator[Cluster]:
    now_s = int(time.time())
    influxd.write(influx_db, "".join(f"m n={i} {(now_s - i) * 10**9}\n" for i in range(1, 61)))
    started = Cluster(
        influxd, influx_db, redis_server, tmp_path, topics_toml=WINDOW_TOML, default_topics=()
    )
    yield started
    started.stop_all()


async def write_every_second(influxd: Influxd, database: str) -> None:
    """A point a second (the window's resolution), so that every append carries rows."""
    n = 1000
    while True:
        n += 1
        line = f"m n={n} {time.time_ns()}\n"
        await trio.to_thread.run_sync(influxd.write, database, line)
        await trio.sleep(1)


@dataclass
class WindowClient:
    """What one client holds: its merged window and the seqs it got, in order."""

    name: str
    window: Any = None
    seqs: list[int] = field(default_factory=list)
    wholes: int = 0


async def follow(
    url: str, client: WindowClient, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    async with connect(url) as ws:
        await next_message(ws)  # welcome
        await send_json(ws, {"type": "subscribe", "topics": ["history"]})
        task_status.started()
        try:
            while True:
                message = await next_message(ws, timeout_s=30)
                if message.get("topic") != "history":
                    continue
                if message["type"] == "metrics_update":
                    client.window, client.wholes = message["data"], client.wholes + 1
                elif message["type"] == "metrics_append":
                    assert message["seq"] == client.seqs[-1] + 1, (client.name, message["seq"])
                    client.window = apply_append(client.window, message["data"])
                else:
                    continue
                client.seqs.append(message["seq"])
        except ConnectionClosed:
            return


async def quiet(
    cluster: Cluster, redis: coredis.Redis[bytes], clients: list[WindowClient]
) -> tuple[int, int]:
    """(the seq Redis handed out last, queryReq) when every client has that seq and it did not
    move while queryReq was read: no query in flight."""
    found: list[tuple[int, int]] = []

    async def settled() -> bool:
        before = int(await redis.get(SEQ_KEY) or 0)
        if any(not c.seqs or c.seqs[-1] != before for c in clients):
            return False
        queries = await trio.to_thread.run_sync(cluster.query_requests)
        if int(await redis.get(SEQ_KEY) or 0) != before:
            return False
        found.append((before, queries))
        return True

    await eventually(settled, timeout_s=20)
    return found[0]


async def test_a_window_topic_costs_one_query_per_tick_for_the_cluster(
    cluster: Cluster, influxd: Influxd, influx_db: str, redis_client: coredis.Redis[bytes]
) -> None:
    nodes = await cluster.start_ready("w1", "w2")
    clients = [
        WindowClient(f"{node.node_id}/{i}") for node in nodes for i in range(CLIENTS_PER_NODE)
    ]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(write_every_second, influxd, influx_db)
        for number, client in enumerate(clients):
            await nursery.start(follow, nodes[number // CLIENTS_PER_NODE].ws_url, client)
        seq_a, queries_a = await quiet(cluster, redis_client, clients)
        await eventually(lambda: all(c.seqs[-1] >= seq_a + 5 for c in clients), timeout_s=30)
        seq_b, queries_b = await quiet(cluster, redis_client, clients)

        # A node started now: its client gets the whole window at once, in the same numbering.
        [late_node] = await cluster.start_ready("w3")
        late = WindowClient("w3/0")
        await nursery.start(follow, late_node.ws_url, late)
        await eventually(lambda: bool(late.seqs))
        seq_c, _ = await quiet(cluster, redis_client, [*clients, late])
        nursery.cancel_scope.cancel()

    assert seq_b - seq_a >= 5
    # One query per tick for both nodes together: each seq is one tick's one query.
    assert queries_b - queries_a == seq_b - seq_a
    for client in clients:
        assert client.wholes == 1, client.name  # the whole window once, then appends only
    # Every client, on either node, holds the same window, built from its appends.
    windows = [orjson.dumps(c.window) for c in [*clients, late]]
    assert len(set(windows)) == 1
    assert late.seqs[-1] == seq_c
    assert late.wholes == 1
    assert all("topic query failed" not in n.log() for n in [*nodes, late_node])
    points = {row[0] for series in clients[0].window["series"] for row in series["values"]}
    # The minute written before the nodes started, less what fell out of the window since,
    # and a point for each second of the writer: most of the window's 60 steps.
    assert len(points) >= 40
