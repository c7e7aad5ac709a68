"""Small helpers for tests that talk to the service as real clients over loopback."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import httpx
import orjson
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

from tests.protocol_schemas import assert_server_message

JSON = dict[str, Any]


@asynccontextmanager
async def connect(url: str, **options: Any) -> AsyncIterator[WebSocketConnection]:
    """``open_websocket_url`` that never leaks its socket nor hangs on exit.

    When the server closes first, trio-websocket 0.12's client ``aclose`` returns early: it
    neither closes the TCP stream (a socket left to the garbage collector) nor the message
    queue, on which its reader task may be blocked forever if the test stopped reading. The
    service closes first on every refusal, slow-consumer cut-off and shutdown.
    """
    async with open_websocket_url(url, **options) as ws:
        try:
            yield ws
        finally:
            await ws._recv_channel.aclose()
            await ws._stream.aclose()


async def eventually(
    condition: Callable[[], Awaitable[bool] | bool], timeout_s: float = 10
) -> None:
    """Wait until ``condition()`` holds, for state that announces itself by no event
    (another process's counters, a status endpoint); fails the test after ``timeout_s``."""
    with trio.fail_after(timeout_s):
        while True:
            result = condition()
            if not isinstance(result, bool):
                result = await result
            if result:
                return
            await trio.sleep(0.02)


async def next_message(ws: WebSocketConnection, timeout_s: float = 10) -> JSON:
    """The next message, decoded; fails the test after ``timeout_s``.

    Every message is checked against docs/asyncapi.yaml (no undocumented field): whatever an
    end-to-end test reads from the service also tests the machine-readable protocol.
    """
    with trio.fail_after(timeout_s):
        raw = await ws.get_message()
    message = orjson.loads(raw)
    assert isinstance(message, dict)
    assert_server_message(message)
    return message


async def wait_for(
    ws: WebSocketConnection, predicate: Callable[[JSON], bool], timeout_s: float = 10
) -> JSON:
    """Skip messages until one matches ``predicate``."""
    with trio.fail_after(timeout_s):
        while True:
            message = await next_message(ws, timeout_s)
            if predicate(message):
                return message


def is_update(topic: str, *, stale: bool | None = None) -> Callable[[JSON], bool]:
    """Predicate: a metrics_update of ``topic`` (and of that staleness, if given)."""
    return lambda m: (
        m.get("type") == "metrics_update"
        and m.get("topic") == topic
        and (stale is None or m.get("stale") is stale)
    )


async def send_json(ws: WebSocketConnection, message: Any) -> None:
    await ws.send_message(orjson.dumps(message).decode())


async def get_json(url: str) -> tuple[int, JSON]:
    """GET ``url``; returns the status and the JSON body."""
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(url)
    return response.status_code, response.json()


def raw_handshake(
    host: str, port: int, *, receive_buffer_bytes: int | None = None
) -> socket.socket:
    """A TCP client that completes the WebSocket handshake and then does nothing at all.

    Blocking socket: call it through ``trio.to_thread.run_sync``. It never reads again, never
    answers pings: the peer a heartbeat or a slow-consumer limit must find.
    """
    sock = socket.socket()
    if receive_buffer_bytes:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer_bytes)
    sock.connect((host, port))
    sock.sendall(
        b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = sock.recv(1)
        if not chunk:
            raise ConnectionError("closed during handshake")
        response += chunk
    assert response.startswith(b"HTTP/1.1 101"), response
    return sock


async def readers_and_a_stopped_peer(
    service_url: str, ws_port: int, readers: int, **options: Any
) -> tuple[dict[int, list[int]], JSON]:
    """``readers`` clients recording every ``seq``, and one peer that never reads.

    Waits until the server has closed the stopped peer as a slow consumer, then until every
    reader has had 5 more updates. Returns the seqs each reader got and the status API's
    answer read meanwhile (with the readers still connected). ``options`` go to ``connect``.
    """
    received: dict[int, list[int]] = {}

    async def reader(number: int, task_status: trio.TaskStatus[None]) -> None:
        async with connect(f"ws://127.0.0.1:{ws_port}/ws", **options) as ws:
            await next_message(ws)  # welcome
            received[number] = []
            task_status.started()
            while True:
                received[number].append((await next_message(ws))["seq"])

    async def slow_consumers_closed() -> int:
        _, status = await get_json(f"{service_url}/api/websocket/status")
        return int(status["summary"]["slowConsumersClosed"])

    async with trio.open_nursery() as nursery:
        for number in range(readers):
            await nursery.start(reader, number)
        stopped = await trio.to_thread.run_sync(
            partial(raw_handshake, "127.0.0.1", ws_port, receive_buffer_bytes=4096)
        )
        try:
            await eventually(lambda: _is_one(slow_consumers_closed()), timeout_s=30)
            closed_at = {number: len(seqs) for number, seqs in received.items()}
            await eventually(
                lambda: min(len(s) - closed_at[n] for n, s in received.items()) >= 5, timeout_s=30
            )
            _, status = await get_json(f"{service_url}/api/websocket/status")
        finally:
            stopped.close()
        nursery.cancel_scope.cancel()
    return received, status


async def _is_one(count: Awaitable[int]) -> bool:
    return await count == 1


def assert_no_gaps(received: dict[int, list[int]], *, at_least: int) -> None:
    """Every reader got at least ``at_least`` updates, with consecutive seqs."""
    for seqs in received.values():
        assert len(seqs) >= at_least
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "a reader missed an update"
