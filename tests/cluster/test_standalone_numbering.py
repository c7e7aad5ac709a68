"""Standalone mode through the broker interface: ``welcome`` names no cluster but the node, and
``epoch`` names each start's numbering. Real services on real sockets, an in-process source
(FakeSource); the cluster itself is tested against a real redis-server in this folder.
"""

from __future__ import annotations

from pathlib import Path

import trio

from broadcaster.channels import Channel
from broadcaster.cluster.local import LocalBroker, default_node_id
from tests.services import StartService, write_topics_file
from tests.wsclient import connect, is_update, next_message, wait_for


async def test_welcome_names_no_cluster_and_the_node(start_service: StartService) -> None:
    service = await start_service(node_id="noc-7", default_topics="overview")
    async with connect(f"ws://127.0.0.1:{service.websocket.port}/ws") as ws:
        welcome = await next_message(ws)
    assert welcome["cluster"] is None
    assert welcome["nodeId"] == "noc-7"


async def test_each_start_has_its_own_epoch_and_one_epoch_per_start(
    start_service: StartService, tmp_path: Path
) -> None:
    topics_file = write_topics_file(tmp_path, cpu="SELECT last(v) FROM cpu")
    epochs: list[set[str]] = []
    for _ in range(2):
        service = await start_service(
            topics_file=topics_file, default_topics="cpu", broadcast_interval_ms=100
        )
        async with connect(f"ws://127.0.0.1:{service.websocket.port}/ws") as ws:
            updates = [await wait_for(ws, is_update("cpu")) for _ in range(3)]
        assert [u["seq"] for u in updates] == [1, 2, 3]
        epochs.append({u["epoch"] for u in updates})
    assert len(epochs[0]) == len(epochs[1]) == 1
    assert epochs[0] != epochs[1]


def test_the_default_node_id_is_unique_per_process_start() -> None:
    assert default_node_id() != default_node_id()


async def test_local_seq_never_goes_back_for_a_forgotten_tenant_channel() -> None:
    broker = LocalBroker("n1")
    acme, globex = Channel("sales", "acme"), Channel("sales", "globex")
    assert [(await broker.claim(acme, None)).seq for _ in range(3)] == [1, 2, 3]  # type: ignore[union-attr]
    broker.forget(acme)
    assert broker.next_seq(globex) == 4  # starts from its topic's highest
    assert broker.next_seq(acme) == 5
    assert broker.next_seq(acme, at_least=9) == 10  # above what this node sent before
    await trio.lowlevel.checkpoint()
