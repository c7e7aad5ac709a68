"""One connection's write path and close sequence, over a real loopback TCP socket.

The server end is a real :class:`~broadcaster.ws.connection.Connection` serving a real socket;
the client end is a real socket with wsproto's client state machine, which parses every
byte the server writes (a torn or interleaved frame fails the parse). Small socket buffers
force partial writes and queueing. Real sockets need the real clock: deadlines, not sleeps,
bound every wait.
"""

from __future__ import annotations

import gc
import socket
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
import trio
import trio.lowlevel
from wsproto import ConnectionType
from wsproto.connection import Connection as WsConnection
from wsproto.events import CloseConnection, Event, Ping, Pong, TextMessage

from broadcaster.channels import Channel
from broadcaster.hub import Hub
from broadcaster.protocol import CloseCode
from broadcaster.ws.connection import Connection
from broadcaster.ws.frames import Frame
from tests.fakes import make_hub, open_connection
from tests.wsclient import eventually

SMALL_BUFFER_BYTES = 4096


@dataclass
class Peer:
    """The client end: a socket and wsproto's client state machine."""

    sock: trio.socket.SocketType
    ws: WsConnection = field(default_factory=lambda: WsConnection(ConnectionType.CLIENT))
    messages: list[dict[str, Any]] = field(default_factory=list)
    pings: int = 0
    pongs_received: int = 0
    closed: CloseConnection | None = None
    _text: list[str] = field(default_factory=list)

    async def send(self, event: Event) -> None:
        data = self.ws.send(event)
        while data:
            sent = await self.sock.send(data)
            data = data[sent:]

    async def read_some(self) -> bool:
        """Read once and parse; answers pings. False at end of stream."""
        data = await self.sock.recv(65536)
        if not data:
            return False
        self.ws.receive_data(data)
        for event in self.ws.events():
            if isinstance(event, TextMessage):
                self._text.append(event.data)
                if event.message_finished:
                    self.messages.append(orjson.loads("".join(self._text)))
                    self._text.clear()
            elif isinstance(event, Ping):
                self.pings += 1
                await self.send(event.response())
            elif isinstance(event, Pong):
                self.pongs_received += 1
            elif isinstance(event, CloseConnection):
                self.closed = event
        return True

    async def read_until(self, done: Any, timeout_s: float = 10) -> None:
        with trio.fail_after(timeout_s):
            while not done():
                if not await self.read_some():
                    return

    def updates(self, topic: str) -> list[int]:
        return [
            m["seq"] for m in self.messages if m["type"] == "metrics_update" and m["topic"] == topic
        ]


@asynccontextmanager
async def served(
    hub: Hub, *, small_buffers: bool = False
) -> AsyncIterator[tuple[Connection, Peer, trio.Event]]:
    """A connection of ``hub`` served over loopback TCP; the event is set when serve returns."""
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    listener.listen()
    client = trio.socket.socket()
    if small_buffers:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUFFER_BYTES)
    await client.connect(listener.getsockname())
    server_socket, _ = await listener.accept()
    listener.close()
    if small_buffers:
        server_socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUFFER_BYTES)
    connection = open_connection(hub)
    served = trio.Event()

    async def serve() -> None:
        stream = trio.SocketStream(server_socket)
        try:
            await connection.serve(stream, WsConnection(ConnectionType.SERVER), hub)
        finally:
            await trio.aclose_forcefully(stream)
            hub.close(connection)
            served.set()

    with client:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            yield connection, Peer(client), served
            nursery.cancel_scope.cancel()


def update(topic: str, seq: int, pad_bytes: int = 0) -> Frame:
    text = orjson.dumps(
        {"type": "metrics_update", "topic": topic, "seq": seq, "pad": "x" * pad_bytes}
    ).decode()
    return Frame(text, topic=topic)


async def test_welcome_is_written_once_the_socket_is_attached() -> None:
    hub = make_hub(["a"], defaults=["a"])
    async with served(hub) as (_, peer, _):
        await peer.read_until(lambda: peer.messages)
    assert peer.messages[0]["type"] == "welcome"


async def test_pings_pongs_and_updates_never_interleave_under_load() -> None:
    hub = make_hub(["a", "b"], defaults=["a", "b"], outbox=10_000, max_pending_bytes=1 << 26)
    async with served(hub, small_buffers=True) as (connection, peer, _):
        for seq in range(1, 301):
            for topic in ("a", "b"):
                hub.publish(Channel(topic, None), update(topic, seq, pad_bytes=3000))
            connection.request_ping(timeout_s=0)  # a ping frame between the updates
            if seq % 10 == 0:
                await peer.send(TextMessage(f'{{"type":"ping","id":{seq}}}'))
                await (
                    trio.lowlevel.checkpoint()
                )  # the reader answers with a pong, queued after updates
        assert connection.outbound.pending_items > 0, "the test must exercise the queue"
        await peer.read_until(lambda: peer.updates("a")[-1:] == [300] == peer.updates("b")[-1:])
        await peer.read_until(lambda: len([m for m in peer.messages if m["type"] == "pong"]) == 30)
    for topic in ("a", "b"):
        seqs = peer.updates(topic)
        assert seqs == sorted(set(seqs)), "updates out of order or repeated"
    pongs = [m["id"] for m in peer.messages if m["type"] == "pong"]
    assert pongs == list(range(10, 301, 10))
    assert peer.pings >= 1
    assert connection.close_code is None or connection.closed_by == "client"


async def test_a_client_reading_slowly_gets_the_newest_values_and_no_backlog() -> None:
    hub = make_hub(["a"], defaults=["a"])
    async with served(hub, small_buffers=True) as (connection, peer, _):
        await peer.read_until(lambda: peer.messages)  # the welcome
        for seq in range(1, 201):
            hub.publish(Channel("a", None), update("a", seq, pad_bytes=2000))
        await peer.read_until(lambda: peer.updates("a")[-1:] == [200])
        replaced = connection.outbound.replaced_updates
        assert connection.close_code is None
    seqs = peer.updates("a")
    assert seqs[-1] == 200
    assert seqs == sorted(set(seqs))
    assert len(seqs) < 200  # older unsent updates were replaced, not queued
    assert replaced == 200 - len(seqs)
    assert hub.counters.replaced_updates == replaced


async def test_partial_writes_are_completed_in_order() -> None:
    hub = make_hub(["a"], outbox=1000, max_pending_bytes=1 << 26)
    async with served(hub, small_buffers=True) as (connection, peer, _):
        sizes = [100_000 + 7 * number for number in range(40)]  # not replaceable: no topic
        for number, size in enumerate(sizes):
            text = orjson.dumps({"type": "blob", "n": number, "pad": "y" * size}).decode()
            connection.offer(Frame(text))
        assert connection.outbound.pending_bytes > 0
        await peer.read_until(lambda: len(peer.messages) == 1 + len(sizes))
    blobs = peer.messages[1:]
    assert [blob["n"] for blob in blobs] == list(range(len(sizes)))
    assert [len(blob["pad"]) for blob in blobs] == sizes


async def test_a_client_that_stops_reading_is_closed_as_slow() -> None:
    hub = make_hub(["a"], defaults=["a"], stall_timeout_s=0.3)
    async with served(hub, small_buffers=True) as (connection, _peer, served_done):
        with trio.fail_after(10):
            seq = 0
            while connection.close_code is None:
                seq += 1
                hub.publish(Channel("a", None), update("a", seq, pad_bytes=20_000))
                await trio.sleep(0.01)
            await served_done.wait()  # the close deadline passed: the socket is closed
    assert connection.close_code == CloseCode.SLOW_CONSUMER
    assert connection.close_reason is not None
    assert "took no data for" in connection.close_reason
    assert hub.counters.slow_consumers_closed == 1


async def test_pong_records_rtt_and_activity() -> None:
    hub = make_hub(["a"])
    async with served(hub) as (connection, peer, _):
        await peer.read_until(lambda: peer.messages)
        connection.last_activity -= 30
        connection.request_ping(timeout_s=5)
        connection.request_ping(timeout_s=5)  # one in flight: not sent again
        await peer.read_until(lambda: peer.pings == 1)
        await eventually(lambda: connection.last_ping_rtt_ms is not None)
        assert connection.idle_s() < 5


async def test_client_close_is_answered_and_ends_the_connection() -> None:
    hub = make_hub(["a"])
    async with served(hub) as (connection, peer, served_done):
        await peer.read_until(lambda: peer.messages)
        await peer.send(CloseConnection(code=1000, reason="bye"))
        await peer.read_until(lambda: peer.closed is not None)
        with trio.fail_after(5):
            await served_done.wait()
    assert peer.closed is not None
    assert peer.closed.code == 1000
    assert (connection.close_code, connection.closed_by) == (1000, "client")


async def test_a_malformed_frame_closes_with_1002() -> None:
    hub = make_hub(["a"])
    async with served(hub) as (connection, peer, served_done):
        await peer.read_until(lambda: peer.messages)
        await peer.sock.send(b"\x81\x02hi")  # unmasked: a client frame must be masked
        await peer.read_until(lambda: peer.closed is not None)
        with trio.fail_after(5):
            await served_done.wait()
    assert peer.closed is not None
    assert peer.closed.code == 1002
    assert (connection.close_code, connection.closed_by) == (1002, "server")


async def test_ping_requested_once_closing_is_ignored() -> None:
    hub = make_hub(["a"])
    connection = open_connection(hub)
    connection.drain()
    connection.close(CloseCode.HEARTBEAT_TIMEOUT, "silent")
    connection.request_ping(timeout_s=1)
    assert [type(item).__name__ for item in connection.drain()] == ["CloseFrame"]


async def test_a_closed_connection_is_freed_without_the_cyclic_gc() -> None:
    # The soak in docs/performance.md ("Memory under churn") found closed connections kept
    # until a full collection: Outbound held the connection's bound methods, a cycle.
    hub = make_hub(["a"], defaults=["a"])
    gc.disable()
    try:
        async with served(hub) as (connection, peer, done):
            await peer.read_until(lambda: peer.messages)
            await peer.send(CloseConnection(code=1000, reason="bye"))
            with trio.fail_after(5):
                await done.wait()
            freed = weakref.ref(connection)
            del connection
        assert not hub.tracked_count()
        assert freed() is None
    finally:
        gc.enable()
