"""An in-memory broadcaster for client tests in virtual time.

The transport is ``trio.testing.memory_stream_pair()`` and both ends speak the real
WebSocket protocol through trio-websocket (``wrap_client_stream`` in the client,
``wrap_server_stream`` here), so no socket is involved and ``MockClock(autojump_threshold=0)``
can run hours of backoff in no time. The test scripts the server: up or refusing, answering
pings or not, and cutting, closing or shutting down connections. With ``token_lifetime_s``
set it plays a service with ``--auth-mode jwt`` as far as the client can tell: its welcome
says ``identity`` and ``authExpiresAt``, and it answers ``auth`` refreshes (accepting them or
not, as ``accept_refresh`` says); ``require_token`` closes a handshake without a token with
4001. It checks no signature (tests/client/test_client_auth_service.py
runs the client against the real service with real tokens).
"""

from __future__ import annotations

import errno
import functools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import trio
import trio.testing
from trio_websocket import ConnectionClosed, WebSocketConnection, wrap_server_stream

from broadcaster.protocol import iso_from_unix_ms
from tests.protocol_schemas import assert_client_message

JSON = dict[str, Any]


@dataclass
class ServerSide:
    """The server's end of one connection."""

    number: int
    ws: WebSocketConnection
    stream: trio.abc.Stream
    opened_at: float
    headers: dict[str, str] = field(default_factory=dict)
    received: list[JSON] = field(default_factory=list)
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    closed: trio.Event = field(default_factory=trio.Event)

    def messages(self, kind: str) -> list[JSON]:
        return [m for m in self.received if m.get("type") == kind]

    @property
    def bearer(self) -> str | None:
        """The token of the handshake's ``Authorization: Bearer`` header, if any."""
        value = self.headers.get("authorization")
        return value.removeprefix("Bearer ") if value is not None else None

    async def send(self, message: JSON) -> None:
        await self.ws.send_message(json.dumps(message))

    async def drop(self) -> None:
        """Cut the transport without a close frame, as a killed server or a failed network."""
        self.scope.cancel()
        await self.stream.aclose()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """A clean close handshake started by the server."""
        await self.ws.aclose(code, reason)

    async def shutdown(self, reconnect_after_ms: int) -> None:
        """What the service does on SIGTERM: ``server_shutdown``, then close with 1001."""
        await self.send(
            {
                "type": "server_shutdown",
                "reason": "server shutting down",
                "reconnectAfterMs": reconnect_after_ms,
                "timestamp": "2026-01-01T00:00:00.000Z",
            }
        )
        await self.close(1001, "server shutting down")


class FakeBroadcaster:
    """Accepts in-memory connections from clients whose ``connect`` is :meth:`connect`."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self._changed = trio.lowlevel.ParkingLot()
        self.up = True
        self.answer_pings = True
        self.pong_delay_s = 0.0
        self.default_topics = ["overview", "regressions"]
        self.token_lifetime_s: float | None = None
        self.accept_refresh = True
        self.require_token = False
        self.attempts: list[float] = []
        self.connections: list[ServerSide] = []

    async def connect(self) -> trio.abc.Stream:
        """The client's connector: a new in-memory connection, or OSError when down."""
        self.attempts.append(trio.current_time())
        self._changed.unpark_all()
        await trio.lowlevel.checkpoint()
        if not self.up:
            raise ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
        client_end, server_end = trio.testing.memory_stream_pair()
        self._nursery.start_soon(self._serve, server_end)
        return client_end

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        """Wait until ``condition()`` holds, checked after each connect and each message."""
        while not condition():
            await self._changed.park()

    async def _serve(self, stream: trio.abc.Stream) -> None:
        async with trio.open_nursery() as nursery:
            try:
                request = await wrap_server_stream(nursery, stream)
                ws = await request.accept()
            except ConnectionClosed:
                nursery.cancel_scope.cancel()
                return
            headers = {
                name.decode("latin-1").lower(): value.decode("latin-1")
                for name, value in request.headers
            }
            side = ServerSide(len(self.connections) + 1, ws, stream, trio.current_time(), headers)
            self.connections.append(side)
            with side.scope:
                try:
                    if self.require_token and side.bearer is None:
                        await side.close(4001, "no token")
                    await side.send(self._welcome(side))
                    while True:
                        message = json.loads(await ws.get_message())
                        assert_client_message(message)  # the shipped client sends the protocol
                        side.received.append(message)
                        self._changed.unpark_all()
                        if message.get("type") == "ping" and self.answer_pings:
                            nursery.start_soon(self._pong, side, message.get("id"))
                        if message.get("type") == "auth":
                            await side.send(self._refresh_answer())
                except ConnectionClosed:
                    pass
            side.closed.set()
            self._changed.unpark_all()
            # The reader task goes on until the close handshake is over and the client has
            # closed its end (or drop() closed ours), then the nursery ends by itself.
        await stream.aclose()

    def _welcome(self, side: ServerSide) -> JSON:
        welcome: JSON = {
            "type": "welcome",
            "connectionId": f"ws_{side.number}_1767225600000",
            "timestamp": "2026-01-01T00:00:00.000Z",
            "topics": ["overview", "regressions", "cpu", "mem"],
            "subscribed": list(self.default_topics),
            "broadcastIntervalMs": 10_000,
        }
        if self.token_lifetime_s is not None:
            welcome["identity"] = {"sub": "alice", "tenant": None}
            welcome["authExpiresAt"] = self._expires_at()
        return welcome

    def _expires_at(self) -> str:
        # The client reads how long is left from the wall clock, then waits in trio time.
        assert self.token_lifetime_s is not None
        return iso_from_unix_ms((time.time() + self.token_lifetime_s) * 1000)

    def _refresh_answer(self) -> JSON:
        if self.accept_refresh:
            return {"type": "auth_refreshed", "authExpiresAt": self._expires_at()}
        return {"type": "error", "code": "invalid_token", "message": "token expired"}

    async def _pong(self, side: ServerSide, ping_id: Any) -> None:
        await trio.sleep(self.pong_delay_s)
        with suppress(ConnectionClosed):
            await side.send(
                {"type": "pong", "timestamp": "2026-01-01T00:00:00.000Z", "id": ping_id}
            )


@asynccontextmanager
async def fake_broadcaster() -> AsyncIterator[FakeBroadcaster]:
    """A :class:`FakeBroadcaster` whose connections end with the block."""
    async with trio.open_nursery() as nursery:
        yield FakeBroadcaster(nursery)
        nursery.cancel_scope.cancel()


def update(topic: str, seq: int, *, stale: bool = False, data: Any = None) -> JSON:
    """A ``metrics_update`` message."""
    return {
        "type": "metrics_update",
        "topic": topic,
        "seq": seq,
        "timestamp": "2026-01-01T00:00:00.000Z",
        "stale": stale,
        "data": {"v": seq} if data is None else data,
    }


def within_virtual_s(seconds: float) -> Callable[[Callable[..., Awaitable[None]]], Any]:
    """Fail the decorated test after ``seconds`` of (virtual) time, instead of letting a
    missing behaviour make the mock clock jump for ever."""

    def decorate(test: Callable[..., Awaitable[None]]) -> Any:
        @functools.wraps(test)
        async def bounded(*args: Any, **kwargs: Any) -> None:
            with trio.fail_after(seconds):
                await test(*args, **kwargs)

        return bounded

    return decorate
