"""Real cluster nodes for the end-to-end tests: ``python -m broadcaster serve`` processes
started by their documented flags on free ports, sharing a real redis-server and a real
influxd, and real WebSocket clients that record every update they get.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import trio
from trio_websocket import ConnectionClosed

from tests.influxd import Influxd, free_ports
from tests.redis_server import RedisServer
from tests.wsclient import connect, eventually, next_message, send_json

TOPICS_TOML = """
[[topic]]
name = "cpu"
query = "SELECT last(v) AS v FROM cpu"

[[topic]]
name = "mem"
query = "SELECT last(v) AS v FROM mem"
"""
TOPICS = ("cpu", "mem")


class Node:
    """One service process of the cluster, its log in a file."""

    def __init__(self, node_id: str, log_path: Path, flags: dict[str, Any]) -> None:
        self.node_id = node_id
        self.ws_port, self.http_port = free_ports(2)
        self.log_path = log_path
        args = {"ws-port": self.ws_port, "http-port": self.http_port, "node-id": node_id, **flags}
        command = [sys.executable, "-m", "broadcaster", "serve"]
        for name, value in args.items():
            command += [f"--{name}", str(value)]
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}/ws"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def log(self) -> str:
        return self.log_path.read_text()

    async def get(self, path: str) -> tuple[int, Any]:
        async with httpx.AsyncClient(timeout=5) as client:
            response = await client.get(self.http_url + path)
        body = response.json() if "json" in response.headers.get("content-type", "") else None
        return response.status_code, body

    async def get_text(self, path: str) -> tuple[int, str]:
        async with httpx.AsyncClient(timeout=5) as client:
            response = await client.get(self.http_url + path)
        return response.status_code, response.text

    async def ready(self) -> None:
        async def answers() -> bool:
            try:
                await self.get("/health")
            except httpx.TransportError:
                return False
            return True

        await eventually(answers, timeout_s=30)

    async def mode(self) -> str:
        _, body = await self.get("/health")
        return str(body["services"]["redis"]["mode"])

    def kill(self) -> None:
        """kill -9."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    async def terminate(self, timeout_s: float = 20) -> int:
        """SIGTERM (graceful shutdown) and wait for the exit code."""
        self.process.send_signal(signal.SIGTERM)
        await eventually(lambda: self.process.poll() is not None, timeout_s=timeout_s)
        return self.process.returncode


@dataclass
class Cluster:
    """Nodes on one Redis and one influxd database; stopped by PID by the fixture."""

    influxd: Influxd
    database: str
    redis: RedisServer
    directory: Path
    nodes: list[Node] = field(default_factory=list)
    stat_reads: int = 0
    topics_toml: str = TOPICS_TOML  # the nodes' topics file
    default_topics: tuple[str, ...] = TOPICS

    def start(self, node_id: str, **flags: Any) -> Node:
        topics = self.directory / "topics.toml"
        topics.write_text(self.topics_toml)
        options = {
            "influx-url": self.influxd.url,
            "influx-db": self.database,
            "redis-url": self.redis.url,
            "topics-file": topics,
            "default-topics": ",".join(self.default_topics),
            "broadcast-interval-ms": 1000,
            "log-level": "info",
            **{name.replace("_", "-"): value for name, value in flags.items()},
        }
        node = Node(node_id, self.directory / f"{node_id}.log", options)
        self.nodes.append(node)
        return node

    async def start_ready(self, *node_ids: str, **flags: Any) -> list[Node]:
        nodes = [self.start(node_id, **flags) for node_id in node_ids]
        for node in nodes:
            await node.ready()
            await eventually(lambda n=node: _in_cluster_mode(n), timeout_s=15)  # type: ignore[misc]
        return nodes

    def query_requests(self) -> int:
        """influxd's own count of queries (``SHOW STATS`` ``queryReq``), less every read of
        it this cluster made (each read is itself a query): a count of the nodes' queries,
        up to a constant (the session's influxd serves other tests too)."""
        self.stat_reads += 1
        return self.influxd.http_stat("queryReq") - self.stat_reads

    def stop_all(self) -> None:
        for node in self.nodes:
            node.kill()


async def _in_cluster_mode(node: Node) -> bool:
    return await node.mode() == "cluster"


@dataclass
class Recorder:
    """What one WebSocket client got: per topic, the (epoch, seq) of every update, in order."""

    name: str
    welcome: dict[str, Any] = field(default_factory=dict)
    updates: dict[str, list[tuple[str, int]]] = field(default_factory=lambda: defaultdict(list))
    closed: bool = False

    def last_seq(self, topic: str) -> int:
        return self.updates[topic][-1][1] if self.updates[topic] else 0


async def record_client(
    url: str,
    recorder: Recorder,
    *,
    subscribe: tuple[str, ...] = (),
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Connect, keep the welcome, subscribe to ``subscribe``, then record updates until the
    connection ends or the task is cancelled."""
    async with connect(url) as ws:
        recorder.welcome = await next_message(ws)
        if subscribe:
            await send_json(ws, {"type": "subscribe", "topics": list(subscribe)})
        task_status.started()
        try:
            while True:
                message = await next_message(ws, timeout_s=60)
                if message["type"] == "metrics_update" and not message["stale"]:
                    recorder.updates[message["topic"]].append((message["epoch"], message["seq"]))
        except ConnectionClosed:
            recorder.closed = True  # its node went away
