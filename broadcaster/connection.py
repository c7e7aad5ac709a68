"""One client connection: its metadata, its ordered outbox, and the tasks that serve it.

Every message to the client goes through the connection's bounded outbox and is written by
its one writer task, in order. The hub never waits on a client: it offers a frame with
``send_nowait``; a client whose outbox is full is too slow and is closed with 4008
(``slow_consumer``) while everyone else carries on. The reader always reads, because reading
is how the server sees disconnects, floods and oversized frames.
"""

from __future__ import annotations

import math
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from broadcaster import protocol
from broadcaster.protocol import CloseCode, ErrorCode, ProtocolViolation, iso_from_unix_ms
from broadcaster.rate_limit import TokenBucket

log = structlog.get_logger("broadcaster.connection")

CLOSE_HANDSHAKE_TIMEOUT_S = 2.0
RATE_LIMIT_ERROR_EVERY_S = 1.0


@dataclass(frozen=True, slots=True)
class Frame:
    """One text message for the client. Built once and shared by every recipient."""

    text: str
    is_update: bool = False


@dataclass(frozen=True, slots=True)
class CloseRequest:
    """Queued after the last frame: the writer closes the connection with this code."""

    code: CloseCode
    reason: str


Outgoing = Frame | CloseRequest


class SubscriptionHandler(Protocol):
    """What a connection asks of the hub when its client (un)subscribes."""

    def subscribe(self, connection: Connection, topics: tuple[str, ...]) -> None: ...

    def unsubscribe(self, connection: Connection, topics: tuple[str, ...]) -> None: ...


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """Who is on the other end, as far as the handshake tells."""

    user_agent: str | None
    ip: str | None


@dataclass(eq=False)
class Connection:
    """A WebSocket client as the server tracks it.

    ``last_activity`` is ``trio.current_time()`` of the last message or pong, so timers
    can be tested in virtual time; the ``*_unix_ms`` fields are wall-clock, for reports.
    """

    id: str
    client_info: ClientInfo
    outbox_messages: int
    rate_limit: TokenBucket
    last_activity: float = field(default_factory=trio.current_time)
    connected_at_unix_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    last_broadcast_unix_ms: int | None = None
    broadcast_count: int = 0
    error_count: int = 0
    last_error: str | None = None
    last_ping_rtt_ms: float | None = None
    subscriptions: set[str] = field(default_factory=set)
    close_code: int | None = None
    close_reason: str | None = None
    closed_by: str | None = None

    def __post_init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[Outgoing](self.outbox_messages)
        self._scope = trio.CancelScope()
        self._nursery: trio.Nursery | None = None
        self._ping_in_flight = False
        self._rate_limited_until = -math.inf
        self.dropped_messages = 0
        # Set by the hub, which keeps the service-wide counters.
        self.on_slow: Callable[[Connection], None] = lambda connection: None
        self.on_error: Callable[[Connection], None] = lambda connection: None

    # --- called by the hub, the broadcast loop and the heartbeat: never block ---------------

    def offer(self, frame: Frame) -> bool:
        """Queue ``frame`` without waiting. A full outbox closes the connection as too slow."""
        if self.close_code is not None:
            return False
        try:
            self._send.send_nowait(frame)
        except trio.WouldBlock:
            self.terminate(
                CloseCode.SLOW_CONSUMER, "outbox full: client is not reading fast enough"
            )
            self.on_slow(self)
            return False
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            return False
        return True

    def send_error(self, code: ErrorCode, message: str, **extra: Any) -> None:
        """Queue an ``error`` message and count it against this connection."""
        self.note_error(f"{code.value}: {message}")
        self.offer(Frame(protocol.error(code, message, **extra)))

    def note_error(self, description: str) -> None:
        """Count an error shown to this client (one frame may be shared by many clients)."""
        self.error_count += 1
        self.last_error = description
        self.on_error(self)

    def terminate(self, code: CloseCode, reason: str) -> None:
        """Stop serving now and close with ``code``; pending frames are dropped."""
        self._set_close(code, reason, "server")
        self._scope.cancel()

    def replace_pending_and_close(self, final: Frame, code: CloseCode, reason: str) -> None:
        """Drop queued frames, send ``final``, then close with ``code`` (used at shutdown)."""
        self.drain()
        try:
            self._send.send_nowait(final)
            self._send.send_nowait(CloseRequest(code, reason))
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            self.terminate(code, reason)

    def drain(self) -> list[Outgoing]:
        """Take every queued, unsent item out of the outbox."""
        taken: list[Outgoing] = []
        while True:
            try:
                taken.append(self._receive.receive_nowait())
            except (trio.WouldBlock, trio.ClosedResourceError, trio.EndOfChannel):
                return taken

    def request_ping(self, timeout_s: float) -> None:
        """Send a WebSocket ping unless one is in flight; its pong counts as activity.

        Ignored once the connection is closing: its nursery is being cancelled, and may
        already be closed to new tasks before ``serve`` returns.
        """
        nursery = self._nursery
        if nursery is None or nursery.cancel_scope.cancel_called or self._ping_in_flight:
            return
        self._ping_in_flight = True
        nursery.start_soon(self._ping, timeout_s)

    def touch(self) -> None:
        """Record activity from the client."""
        self.last_activity = trio.current_time()

    def idle_s(self) -> float:
        """Seconds since the client was last heard from."""
        return trio.current_time() - self.last_activity

    # --- serving -----------------------------------------------------------------------------

    async def serve(self, websocket: WebSocketConnection, hub: SubscriptionHandler) -> None:
        """Read and write until either side ends, then close with the recorded code.

        Returns when the connection is closed. Never raises for client misbehaviour.
        """
        self._websocket = websocket
        with self._scope:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._first_done_cancels, nursery, self._read_loop, hub)
                nursery.start_soon(self._first_done_cancels, nursery, self._write_loop)
        self._nursery = None
        self._send.close()
        self._set_close(CloseCode.NORMAL, "", "server")
        assert self.close_code is not None
        if self.closed_by == "server":
            with trio.move_on_after(CLOSE_HANDSHAKE_TIMEOUT_S):
                # aclose() closes the TCP stream even when it is cancelled.
                await websocket.aclose(self.close_code, self.close_reason or None)

    @staticmethod
    async def _first_done_cancels(
        nursery: trio.Nursery, loop: Callable[..., Any], *args: Any
    ) -> None:
        try:
            await loop(*args)
        finally:
            nursery.cancel_scope.cancel()

    async def _read_loop(self, hub: SubscriptionHandler) -> None:
        while True:
            try:
                raw = await self._websocket.get_message()
            except ConnectionClosed as closed:
                reason = closed.reason
                if reason is None:
                    self._set_close(CloseCode.NORMAL, "connection lost", "client")
                else:
                    by = "server" if reason.code == CloseCode.MESSAGE_TOO_BIG else "client"
                    self._set_close(int(reason.code), reason.reason or reason.name, by)
                return
            self.touch()
            if self.rate_limit.take():
                self._handle(raw, hub)
            else:
                self._drop_over_limit()

    def _drop_over_limit(self) -> None:
        """Drop a message sent over the rate limit, unparsed; say so at most once a second."""
        self.dropped_messages += 1
        now = trio.current_time()
        if now >= self._rate_limited_until:
            self._rate_limited_until = now + RATE_LIMIT_ERROR_EVERY_S
            self.send_error(
                ErrorCode.RATE_LIMITED,
                "too many messages: messages over the limit are dropped "
                f"({self.dropped_messages} so far)",
            )

    def _handle(self, raw: str | bytes, hub: SubscriptionHandler) -> None:
        try:
            message = protocol.parse_client_message(raw)
        except ProtocolViolation as violation:
            self.send_error(violation.code, violation.message)
            return
        match message:
            case protocol.Ping(id=ping_id):
                self.offer(Frame(protocol.pong(ping_id)))
            case protocol.Subscribe(topics=topics):
                hub.subscribe(self, topics)
            case protocol.Unsubscribe(topics=topics):
                hub.unsubscribe(self, topics)

    async def _write_loop(self) -> None:
        async for item in self._receive:
            if isinstance(item, CloseRequest):
                self._set_close(item.code, item.reason, "server")
                return
            try:
                await self._websocket.send_message(item.text)
            except ConnectionClosed:
                return
            if item.is_update:
                self.broadcast_count += 1
                self.last_broadcast_unix_ms = int(time.time() * 1000)

    async def _ping(self, timeout_s: float) -> None:
        payload = struct.pack("!d", time.monotonic())
        started = trio.current_time()
        try:
            with trio.move_on_after(timeout_s):
                await self._websocket.ping(payload)
                self.last_ping_rtt_ms = round((trio.current_time() - started) * 1000, 3)
                self.touch()
        except (ConnectionClosed, ValueError):
            pass
        finally:
            self._ping_in_flight = False

    def _set_close(self, code: int, reason: str, by: str) -> None:
        if self.close_code is None:
            self.close_code, self.close_reason, self.closed_by = int(code), reason, by

    def summary(self) -> dict[str, Any]:
        """The connection as reported by the status API and the disconnect log line."""
        return {
            "id": self.id,
            "connectedAt": iso_from_unix_ms(self.connected_at_unix_ms),
            "lastActivity": iso_from_unix_ms(time.time() * 1000 - self.idle_s() * 1000),
            "lastBroadcast": iso_from_unix_ms(self.last_broadcast_unix_ms),
            "broadcastCount": self.broadcast_count,
            "errorCount": self.error_count,
            "lastError": self.last_error,
            "subscriptions": sorted(self.subscriptions),
            "lastPingRttMs": self.last_ping_rtt_ms,
            "clientInfo": {"userAgent": self.client_info.user_agent, "ip": self.client_info.ip},
            "pendingMessages": self._send.statistics().current_buffer_used,
            "droppedMessages": self.dropped_messages,
        }
