"""One client connection: its metadata, its reader, and the close sequence.

Everything sent to the client goes through the connection's
:class:`~broadcaster.ws.outbound.Outbound` in order; the hub never waits on a client. One
task serves a connection: it reads (reading is how the server sees messages, pongs,
disconnects, floods and oversized frames) while the outbound path writes synchronously, with
a flusher task only while output is queued.

Reading is bounded by :class:`InputLimits`: a message is measured in bytes (UTF-8, not
characters) and in frames, and the bytes and frames a client sends are paced by token
buckets: over its allowance the reader stops reading until the allowance is back, so a flood
costs a bounded amount of work per second and never delays other clients.

Every task serving the connection (the reader, each message's handling, the flusher) runs
inside a :mod:`~broadcaster.containment` boundary: an unforeseen error closes this one
connection with 1011 (or cuts it) and goes no further.

Closing: the server queues its close frame after whatever must still go out, and gives the
client ``CLOSE_HANDSHAKE_TIMEOUT_S`` to answer with its own close frame; then the socket is
closed. A client's close frame is answered the same way. :meth:`Connection.abort` cuts a
connection at once.
"""

from __future__ import annotations

import logging
import math
import struct
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

import structlog
import trio
from wsproto.connection import Connection as WsConnection
from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection, Message, Ping, Pong

from broadcaster import protocol
from broadcaster.auth.identity import Identity
from broadcaster.containment import Stage
from broadcaster.protocol import CloseCode, ErrorCode, ProtocolViolation
from broadcaster.ws.assembly import MessageAssembly, Oversized
from broadcaster.ws.frames import CloseFrame, Control, Frame, Outgoing
from broadcaster.ws.outbound import Outbound
from broadcaster.ws.policy import ClientInfo, ConnectionPolicy
from broadcaster.ws.rate_limit import TokenBucket
from broadcaster.ws.tls import ClientStream, TLSStream

if TYPE_CHECKING:
    from broadcaster.ws.auth_gate import AuthGate

log = structlog.get_logger("broadcaster.ws.connection")

CLOSE_HANDSHAKE_TIMEOUT_S = 2.0
RATE_LIMIT_ERROR_EVERY_S = 1.0
RECEIVE_BYTES = 16384
# Close codes a peer may not put in a close frame (RFC 6455 7.4.1): answered with 1000.
_RESERVED_CLOSE_CODES = {1005, 1006, 1015}


class SubscriptionHandler(Protocol):
    """What a connection asks of the hub when its client (un)subscribes."""

    def subscribe(self, connection: Connection, topics: tuple[str, ...]) -> None: ...

    def unsubscribe(self, connection: Connection, topics: tuple[str, ...]) -> None: ...

    def send_snapshot(self, connection: Connection, topic: str) -> None: ...


@dataclass(frozen=True, slots=True)
class CloseRecord:
    """How a connection ends: set once, by the first of the server or the client to decide.

    ``handshake`` is True when a close frame (ours, or our answer to the client's) is queued
    and must be delivered before the socket closes; False when the connection is cut.
    """

    code: int
    reason: str
    by: str  # "server" or "client"
    handshake: bool


class Connection:
    """A WebSocket client as the server tracks it.

    ``last_activity`` is ``trio.current_time()`` of the last message or pong, so timers
    can be tested in virtual time; the ``*_unix_ms`` fields are wall-clock, for reports.
    Closing goes through :meth:`close` or :meth:`abort`, which set the one :class:`CloseRecord`.
    """

    def __init__(self, id: str, client_info: ClientInfo, policy: ConnectionPolicy) -> None:
        self.id = id
        self.client_info = client_info
        self.containment = policy.containment
        self.input_limits = policy.input
        self.counters = policy.counters
        self.last_activity = trio.current_time()
        self.connected_at_unix_ms = int(time.time() * 1000)
        self.error_count = 0
        self.last_error: str | None = None
        self.last_ping_rtt_ms: float | None = None
        self.subscriptions: set[str] = set()
        # When (trio.current_time()) each topic's value was last sent for a ``snapshot``.
        self.snapshots_sent: dict[str, float] = {}
        # Who holds the connection, once a valid token is presented (--auth-mode jwt).
        self.identity: Identity | None = None
        self.dropped_messages = 0
        self.closing: CloseRecord | None = None
        # Bound methods make a cycle Connection -> Outbound -> Connection: Outbound.detach()
        # drops them when serving ends, so a closed connection is freed by reference counting.
        self.outbound = Outbound(
            max_items=policy.output.max_messages,
            max_bytes=policy.output.max_bytes,
            stall_timeout_s=policy.output.stall_timeout_s,
            on_slow=self._too_slow,
            on_broken=self._peer_gone,
            counters=policy.counters,
        )
        limits = policy.input
        self._messages = TokenBucket(limits.messages_per_s, limits.message_burst)
        # One second's allowance may be used at once: a well-behaved client never waits.
        self._bytes = TokenBucket(limits.bytes_per_s, limits.bytes_per_s)
        self._frames = TokenBucket(limits.frames_per_s, limits.frames_per_s)
        self._scope = trio.CancelScope()
        self._ping_sent_at: float | None = None
        self._ping_payload = b""
        # Whether the ping in flight was already counted as unanswered (see request_ping).
        self._ping_missed = False
        self.pings_unanswered = 0
        self.opened_at = trio.current_time()
        # Checked once: at info level, receiving a message builds no log fields at all.
        self._log_messages = log.is_enabled_for(logging.DEBUG)
        self._rate_limited_until = -math.inf
        self._gate: AuthGate | None = None

    @property
    def close_code(self) -> int | None:
        """The close code once closing (None while open)."""
        return None if self.closing is None else self.closing.code

    @property
    def close_reason(self) -> str | None:
        """The close reason once closing."""
        return None if self.closing is None else self.closing.reason

    @property
    def closed_by(self) -> str | None:
        """ "server" or "client" once closing."""
        return None if self.closing is None else self.closing.by

    # --- called by the hub, the broadcast loop and the heartbeat: never block ---------------

    def offer(self, frame: Frame) -> bool:
        """Send or queue ``frame`` without waiting; False once the connection is closing."""
        if self.closing is not None:
            return False
        self.outbound.push(frame)
        if frame.topic is not None:  # a cached value on subscribe: counted like a fan-out
            self.outbound.count_update(int(time.time() * 1000))
            self.counters.broadcasts += 1
        return True

    def send_error(self, code: ErrorCode, message: str, **extra: Any) -> None:
        """Send an ``error`` message and count it against this connection."""
        self.note_error(f"{code.value}: {message}")
        self.offer(Frame(protocol.error(code, message, **extra)))

    def note_error(self, description: str) -> None:
        """Count an error shown to this client (one frame may be shared by many clients)."""
        self.error_count += 1
        self.last_error = description
        self.counters.errors += 1

    def close(self, code: int, reason: str, *, final: Frame | None = None) -> None:
        """Close with ``code``: unsent frames give way to ``final`` (if any) and the close
        frame, which the client has ``CLOSE_HANDSHAKE_TIMEOUT_S`` to answer. No-op once closing.
        """
        self._record(code, reason, "server", answer=CloseFrame(code, reason), final=final)

    def abort(self, code: int, reason: str) -> None:
        """Cut the connection now, without a close handshake (also while closing)."""
        self._record(code, reason, "server")
        self._scope.cancel()

    def drain(self) -> list[Outgoing]:
        """Take every queued, unsent frame out (for a connection with no socket yet)."""
        return self.outbound.drain()

    def request_ping(self, timeout_s: float) -> None:
        """Send a WebSocket ping unless one sent less than ``timeout_s`` ago is unanswered.

        Its pong counts as activity and gives the round-trip time. The heartbeat calls this
        once per interval: a ping still unanswered then is counted, once, as unanswered (the
        connection's first one is logged), so trouble shows before the 4000 close.
        """
        now = trio.current_time()
        if self.closing is not None:
            return
        if self._ping_sent_at is not None and not self._ping_missed:
            self._note_unanswered_ping(now - self._ping_sent_at)
        if self._ping_sent_at is not None and now - self._ping_sent_at < timeout_s:
            return
        self._ping_payload = struct.pack("!d", time.monotonic())
        self._ping_sent_at = now
        self._ping_missed = False
        self.outbound.push(Control.ping(self._ping_payload))

    def _note_unanswered_ping(self, waited_s: float) -> None:
        self._ping_missed = True
        self.pings_unanswered += 1
        self.counters.pings_unanswered += 1
        if self.pings_unanswered == 1:
            log.warning(
                "ping unanswered",
                connection_id=self.id,
                ip=self.client_info.ip,
                waited_ms=round(waited_s * 1000),
            )

    def age_s(self) -> float:
        """Seconds since the connection was opened."""
        return trio.current_time() - self.opened_at

    def touch(self) -> None:
        """Record activity from the client."""
        self.last_activity = trio.current_time()

    def idle_s(self) -> float:
        """Seconds since the client was last heard from."""
        return trio.current_time() - self.last_activity

    # --- serving -----------------------------------------------------------------------------

    async def serve(
        self,
        stream: ClientStream,
        ws: WsConnection,
        hub: SubscriptionHandler,
        gate: AuthGate | None = None,
    ) -> None:
        """Read, handle and answer until the connection ends; the caller closes ``stream``.

        With a ``gate`` (``--auth-mode jwt``), messages go to it until it admits the client.
        Returns when the close handshake is done, the peer is gone, the close deadline
        passed or :meth:`abort` was called. Never raises for client misbehaviour.
        """
        self._gate = gate
        with self._scope:
            async with trio.open_nursery() as nursery:
                self._attach(stream, nursery)
                try:
                    with self._boundary(Stage.READER, self._fail):
                        if gate is not None:
                            await gate.start(nursery)
                        await self._read_until_closed(stream, ws, hub)
                    if self.closing is not None and self.closing.handshake:
                        await self.outbound.wait_drained()  # ours or our answer, in time
                finally:
                    self.outbound.detach()
                    nursery.cancel_scope.cancel()
        self._record(CloseCode.NORMAL, "", "server")

    def _attach(self, stream: ClientStream, nursery: trio.Nursery) -> None:
        """Hand the socket to the outbound path; over TLS, the records are made there too."""
        start_flusher = partial(self._start_flusher, nursery)
        if isinstance(stream, TLSStream):
            stream.ciphertext_sink = self.outbound.push_ciphertext
            self.outbound.attach(stream.socket.fileno(), start_flusher, encrypt=stream.encrypt)
        else:
            self.outbound.attach(stream.socket.fileno(), start_flusher)

    def _boundary(
        self, stage: Stage, on_failure: Callable[[], None]
    ) -> AbstractContextManager[None]:
        return self.containment.boundary(
            stage, connection_id=self.id, address=self.client_info.ip, on_failure=on_failure
        )

    def _start_flusher(self, nursery: trio.Nursery, flush: Callable[[], Awaitable[None]]) -> None:
        nursery.start_soon(self._flush_contained, flush)

    async def _flush_contained(self, flush: Callable[[], Awaitable[None]]) -> None:
        with self._boundary(Stage.FLUSHER, self._cut):
            await flush()

    def _fail(self) -> None:
        """After an unforeseen error: close with 1011, or cut if a close is already under way."""
        if self.closing is None:
            self.close(CloseCode.INTERNAL_ERROR, "internal error")
        else:
            self._cut()

    def _cut(self) -> None:
        self.abort(CloseCode.INTERNAL_ERROR, "internal error")

    async def _read_until_closed(
        self, stream: ClientStream, ws: WsConnection, hub: SubscriptionHandler
    ) -> None:
        """Read and act on frames until the peer closes or goes away, within the limits.

        Frames wsproto already holds (sent right behind the handshake) are acted on first.
        """
        limits = self.input_limits
        message = MessageAssembly(limits.max_message_bytes, limits.max_message_fragments)
        while not await self._act_on_frames(ws, message, hub):
            await self._bytes.repay()
            try:
                data = await stream.receive_some(RECEIVE_BYTES)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if not data:
                self._record(CloseCode.NORMAL, "connection lost", "client")
                return
            self._bytes.spend(len(data))
            ws.receive_data(data)

    async def _act_on_frames(
        self, ws: WsConnection, message: MessageAssembly, hub: SubscriptionHandler
    ) -> bool:
        """Act on each frame wsproto has parsed, at the allowed pace; True once closed."""
        for event in ws.events():
            self._frames.spend(1)
            match event:
                case Message():
                    if (raw := self._on_message(event, message)) is not None:
                        with self._boundary(Stage.HANDLER, self._fail):
                            await self._receive(raw, hub)
                case Ping():
                    self._on_ping(event)
                case Pong():
                    self._on_pong(event)
                case CloseConnection():
                    self._on_close(ws, event)
                    return True
            await self._frames.repay()
        return False

    def _on_ping(self, event: Ping) -> None:
        self.touch()
        if self.closing is None:
            self.outbound.push(Control.pong(event.payload))

    def _on_message(self, event: Message[Any], message: MessageAssembly) -> str | bytes | None:
        """Add one frame (or part of one) to the message; the message once complete."""
        if self.closing is not None:
            return None  # closing: what the client still sends is discarded
        self.touch()
        outcome = message.add(event)
        if isinstance(outcome, Oversized):
            self._too_big(outcome.reason)
            return None
        return outcome

    def _too_big(self, reason: str) -> None:
        """Close with 1009, counted here where the decision is made."""
        self.counters.oversized_messages += 1
        self.close(CloseCode.MESSAGE_TOO_BIG, reason)

    def _on_close(self, ws: WsConnection, event: CloseConnection) -> None:
        if ws.state is ConnectionState.OPEN:
            # wsproto reports a frame it cannot parse as a close event of its own (1002, 1007).
            self.close(event.code, event.reason or "protocol error")
            return
        code = event.code  # if we were closing already, this answers our close frame
        answer = CloseCode.NORMAL if code in _RESERVED_CLOSE_CODES else code
        self._record(code, event.reason or "", "client", answer=CloseFrame(answer, ""))

    async def _receive(self, raw: str | bytes, hub: SubscriptionHandler) -> None:
        if self._messages.take():
            await self._handle(raw, hub)
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

    async def _handle(self, raw: str | bytes, hub: SubscriptionHandler) -> None:
        if self._log_messages:
            _log_received(self.id, raw)
        gate = self._gate
        if gate is not None and not gate.admitted:
            await gate.first_message(raw)  # the token, or the connection ends
            return
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
            case protocol.Snapshot(topic=topic):
                hub.send_snapshot(self, topic)
            case protocol.Auth(token=token) if gate is not None:
                await gate.refresh(token)  # without authentication, a token is not needed

    def _on_pong(self, event: Pong) -> None:
        self.touch()
        if self._ping_sent_at is not None and event.payload == self._ping_payload:
            self.last_ping_rtt_ms = round((trio.current_time() - self._ping_sent_at) * 1000, 3)
            self._ping_sent_at = None
            self._ping_missed = False

    # --- closing -----------------------------------------------------------------------------

    def _record(
        self,
        code: int,
        reason: str,
        by: str,
        *,
        answer: CloseFrame | None = None,
        final: Frame | None = None,
    ) -> None:
        """The one close path: the first decision sets the record; later ones change nothing.

        With ``answer``, unsent frames give way to ``final`` and that close frame, delivered
        by a deadline; without, the connection is being cut or is already gone.
        """
        if self.closing is not None:
            return
        self.closing = CloseRecord(int(code), reason, by, handshake=answer is not None)
        self.outbound.stop_accepting()
        if answer is not None:
            self.outbound.discard_unsent()
            if final is not None:
                self.outbound.push(final)
            self.outbound.push(answer)
            self._scope.deadline = trio.current_time() + CLOSE_HANDSHAKE_TIMEOUT_S

    def _too_slow(self, reason: str) -> None:
        if self.closing is not None:
            return
        self.close(CloseCode.SLOW_CONSUMER, f"slow consumer: {reason}")
        self.counters.slow_consumers_closed += 1
        log.warning(
            "slow consumer closed",
            connection_id=self.id,
            reason=self.close_reason,
            code=int(CloseCode.SLOW_CONSUMER),
        )

    def _peer_gone(self) -> None:
        self._record(CloseCode.NORMAL, "connection lost", "client")
        self._scope.cancel()

    @property
    def broadcast_count(self) -> int:
        """Updates handed to this connection: sent, queued, or queued and since replaced."""
        return self.outbound.updates

    @property
    def last_broadcast_unix_ms(self) -> int | None:
        """When the last update was handed to this connection."""
        return self.outbound.last_update_unix_ms


def _log_received(connection_id: str, raw: str | bytes) -> None:
    """The debug line of one message: its type and size, never its content (an ``auth``
    message's token). Parsed again here, for the type: at debug level only."""
    try:
        # The class names are the wire types: ping, subscribe, unsubscribe, auth, snapshot.
        message_type = type(protocol.parse_client_message(raw)).__name__.lower()
    except ProtocolViolation as violation:
        message_type = f"invalid ({violation.code.value})"
    size = len(raw.encode()) if isinstance(raw, str) else len(raw)
    log.debug("message received", connection_id=connection_id, type=message_type, size=size)
