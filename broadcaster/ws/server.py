"""The WebSocket server: accepts on ``/ws`` (wsproto on Trio) and hands each client to the hub.

The server owns its WebSocket layer so that the broadcast can write one shared frame to every
subscriber without a task switch per client (see :mod:`broadcaster.ws.outbound`). The upgrade
request is parsed with h11 and checked by :mod:`broadcaster.ws.handshake`; wsproto parses client
frames. No extension is negotiated.

Accepting and serving live in different scopes: the accept loop runs in a cancel scope of
its own, the connections in a nursery that outlives it. Shutdown cancels the accept scope
(the listening sockets close, new clients are refused by the kernel) while the open
connections are still there to be told ``server_shutdown`` and closed with 1001.
"""

from __future__ import annotations

import contextlib
import os
import ssl
from dataclasses import dataclass, field
from functools import partial

import structlog
import trio
from wsproto import ConnectionType
from wsproto.connection import Connection as WsConnection
from wsproto.events import CloseConnection

from broadcaster.auth.origins import printable_origin
from broadcaster.containment import Stage
from broadcaster.hub import Hub
from broadcaster.protocol import CloseCode
from broadcaster.reuse_port import open_reuse_port_listeners
from broadcaster.ws import handshake
from broadcaster.ws.auth_gate import AuthGate
from broadcaster.ws.connection import RECEIVE_BYTES, Connection
from broadcaster.ws.frames import CloseFrame
from broadcaster.ws.policy import ClientInfo, ConnectionPolicy
from broadcaster.ws.tls import ClientStream, TLSStream

log = structlog.get_logger("broadcaster.ws")

WS_PATH = "/ws"
HANDSHAKE_TIMEOUT_S = 10.0
REFUSE_CLOSE_TIMEOUT_S = 2.0
# The client left: expected at any point, never a failure.
_PEER_GONE = (trio.BrokenResourceError, trio.ClosedResourceError)
_BAD_REQUEST = handshake.reject_response(handshake.Reject(400, "bad request"))
_CLOSE_1011 = CloseFrame(CloseCode.INTERNAL_ERROR, "internal error").wire


@dataclass
class WebSocketEndpoint:
    """A running WebSocket server: where it listens, and how to stop accepting."""

    host: str
    port: int
    accept_scope: trio.CancelScope
    ssl_context: ssl.SSLContext | None = None  # set: clients speak TLS (wss://)

    @property
    def url(self) -> str:
        """The URL clients connect to."""
        scheme = "ws" if self.ssl_context is None else "wss"
        return f"{scheme}://{self.host}:{self.port}{WS_PATH}"

    def stop_accepting(self) -> None:
        """Close the listening sockets; open connections are left alone."""
        self.accept_scope.cancel()


@dataclass(frozen=True)
class _Accepted:
    ws: WsConnection
    client_info: ClientInfo
    authorization: tuple[bytes, ...] = field(default=(), repr=False)  # raw, never logged


async def serve_websockets(
    hub: Hub,
    policy: ConnectionPolicy,
    host: str,
    port: int,
    *,
    ssl_context: ssl.SSLContext | None = None,
    reuse_port: bool = False,
    task_status: trio.TaskStatus[WebSocketEndpoint] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve WebSocket clients until cancelled; reports the bound endpoint when listening.

    Each accepted client becomes a :class:`Connection` built from ``policy`` (its limits and
    the service-wide counters and containment), which the hub registers. With
    ``ssl_context``, each client's TLS handshake comes first (:mod:`broadcaster.ws.tls`).
    With ``reuse_port``, the port can be shared with other processes
    (:mod:`broadcaster.reuse_port`).
    """
    if reuse_port:
        listeners: list[trio.SocketListener] = await open_reuse_port_listeners(host, port)
    else:
        listeners = await trio.open_tcp_listeners(port, host=host)
    bound_port = listeners[0].socket.getsockname()[1]
    endpoint = WebSocketEndpoint(
        host=host, port=bound_port, accept_scope=trio.CancelScope(), ssl_context=ssl_context
    )
    async with trio.open_nursery() as connections:
        log.info(
            "websocket server listening", url=endpoint.url, max_connections=hub.max_connections
        )
        task_status.started(endpoint)
        with endpoint.accept_scope:
            hub.set_accept_loop_running(True)
            try:
                await trio.serve_listeners(
                    partial(_serve_client, hub, policy, endpoint),
                    listeners,
                    handler_nursery=connections,
                )
            finally:
                hub.set_accept_loop_running(False)


async def _serve_client(
    hub: Hub, policy: ConnectionPolicy, endpoint: WebSocketEndpoint, socket: trio.SocketStream
) -> None:
    """One client from its first byte to its socket's close.

    Nothing that happens while serving it escapes: what the protocol foresees is answered
    where it is read, and anything else is caught by a containment boundary that ends this
    client alone (HTTP 400 during the handshake, close 1011 after it).
    """
    tls = endpoint.ssl_context
    stream: ClientStream = socket if tls is None else TLSStream(socket, tls)
    boundary = partial(hub.containment.boundary, connection_id=None, address=_peer_ip(stream))
    accepted: _Accepted | None = None
    try:
        with boundary(Stage.HANDSHAKE, on_failure=partial(_send_now, stream, _BAD_REQUEST)):
            accepted = await _handshake_in_time(stream, policy)
        if accepted is not None:
            with boundary(Stage.LIFECYCLE, on_failure=partial(_send_now, stream, _CLOSE_1011)):
                await _serve_accepted(hub, policy, endpoint, stream, accepted)
    finally:
        await trio.aclose_forcefully(stream)


async def _handshake_in_time(stream: ClientStream, policy: ConnectionPolicy) -> _Accepted | None:
    """The handshake (TLS first, if any), or None if the client left, broke TLS or took
    longer than the timeout."""
    with trio.move_on_after(HANDSHAKE_TIMEOUT_S):
        try:
            if isinstance(stream, TLSStream):
                await stream.handshake()
            return await _handshake(stream, policy)
        except _PEER_GONE:
            return None
    return None


async def _serve_accepted(
    hub: Hub,
    policy: ConnectionPolicy,
    endpoint: WebSocketEndpoint,
    stream: ClientStream,
    accepted: _Accepted,
) -> None:
    """Refuse the upgraded client, or register it and serve it until it is closed.

    Without authentication it is admitted (welcomed) at once; with it, its gate admits it
    once it has presented a valid token.
    """
    refusal = _refusal(hub, endpoint, accepted.client_info.ip)
    if refusal is not None:
        with contextlib.suppress(*_PEER_GONE):
            await _refuse(hub, stream, accepted.ws, *refusal)
        return
    connection = Connection(hub.new_connection_id(), accepted.client_info, policy)
    hub.register(connection)
    gate = None
    if policy.auth is None:
        hub.admit(connection)
    else:
        gate = AuthGate(connection, policy.auth, hub, accepted.authorization)
    try:
        await connection.serve(stream, accepted.ws, hub, gate)
    finally:
        hub.close(connection)


def _send_now(stream: ClientStream, data: bytes) -> None:
    """Best-effort last words to a client being cut off: one non-blocking write, no waiting."""
    with contextlib.suppress(OSError):  # ssl.SSLError is one: no TLS session to speak in
        if isinstance(stream, TLSStream):
            data = stream.encrypt(data)
        os.write(stream.socket.fileno(), data)


def _peer_ip(stream: ClientStream) -> str | None:
    try:
        return str(stream.socket.getpeername()[0])
    except OSError:
        return None


async def _handshake(stream: ClientStream, policy: ConnectionPolicy) -> _Accepted | None:
    """Read the upgrade request and answer it: accepted, or refused with an HTTP error.

    :mod:`broadcaster.ws.handshake` judges the request without decoding any header, so no
    request can raise here; a refused client gets an answer it can read (lingering close).
    A browser page from an Origin the policy refuses gets 403, counted and logged.
    """
    reader = handshake.RequestReader()
    request = await handshake.receive_request(stream, reader)
    if request is None:
        return None  # gone before sending a whole request
    if isinstance(request, handshake.Reject):
        decision: handshake.Accept | handshake.Reject = request
    else:
        decision = handshake.validate(request, path=WS_PATH)
    if isinstance(decision, handshake.Accept) and policy.origins is not None:
        refused = handshake.check_origin(decision, policy.origins)
        if refused is not None:
            policy.counters.origins_refused += 1
            log.warning(
                "origin refused",
                origin=printable_origin(b", ".join(decision.origins)),
                ip=_peer_ip(stream),
            )
            decision = refused
    if isinstance(decision, handshake.Reject):
        log.debug(  # not info: every port scan would fill the log
            "handshake refused", status=decision.status, reason=decision.reason, ip=_peer_ip(stream)
        )
        await handshake.send_rejection(stream, decision)
        return None
    await stream.send_all(handshake.accept_response(decision))
    # Frames the client sent without waiting for our 101 are the connection's first input.
    ws = WsConnection(ConnectionType.SERVER, trailing_data=reader.trailing_data())
    return _Accepted(ws, _client_info(decision.user_agent, stream), decision.authorization)


def _client_info(user_agent: bytes | None, stream: ClientStream) -> ClientInfo:
    return ClientInfo(
        user_agent=user_agent.decode("latin-1") if user_agent is not None else None,
        ip=_peer_ip(stream),
    )


def _refusal(hub: Hub, endpoint: WebSocketEndpoint, ip: str | None) -> tuple[CloseCode, str] | None:
    """Why a just-accepted client may not stay: shutting down (1001), at capacity or over the
    per-address cap (1013); None if it may."""
    if endpoint.accept_scope.cancel_called:
        return CloseCode.GOING_AWAY, "server shutting down"
    if not hub.has_capacity():
        return CloseCode.TRY_AGAIN_LATER, f"server at capacity ({hub.max_connections} connections)"
    if not hub.has_room_for_address(ip):
        return CloseCode.TRY_AGAIN_LATER, "too many connections from this address"
    return None


async def _refuse(
    hub: Hub, stream: ClientStream, ws: WsConnection, code: CloseCode, reason: str
) -> None:
    """Close a just-accepted client with ``code`` and ``reason`` (see :func:`_refusal`)."""
    hub.refuse()
    log.warning("connection refused", reason=reason, code=int(code), ip=_peer_ip(stream))
    with trio.move_on_after(REFUSE_CLOSE_TIMEOUT_S):
        await stream.send_all(CloseFrame(code, reason).wire)
        while data := await stream.receive_some(RECEIVE_BYTES):  # until its close frame
            ws.receive_data(data)
            if any(isinstance(event, CloseConnection) for event in ws.events()):
                return
