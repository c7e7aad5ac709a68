"""The WebSocket server (trio-websocket): accepts on ``/ws`` and hands each client to the hub.

Accepting and serving live in different scopes: the accept loop runs in a cancel scope of
its own, the connections in a nursery that outlives it. Shutdown cancels the accept scope
(the listening sockets close, new clients are refused by the kernel) while the open
connections are still there to be told ``server_shutdown`` and closed with 1001.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog
import trio
from trio_websocket import WebSocketRequest, WebSocketServer

from broadcaster.connection import ClientInfo
from broadcaster.hub import Hub
from broadcaster.protocol import CloseCode

log = structlog.get_logger("broadcaster.ws")

WS_PATH = "/ws"
HANDSHAKE_TIMEOUT_S = 10.0
REFUSE_CLOSE_TIMEOUT_S = 2.0


@dataclass
class WebSocketEndpoint:
    """A running WebSocket server: where it listens, and how to stop accepting."""

    host: str
    port: int
    accept_scope: trio.CancelScope

    @property
    def url(self) -> str:
        """The URL clients connect to."""
        return f"ws://{self.host}:{self.port}{WS_PATH}"

    def stop_accepting(self) -> None:
        """Close the listening sockets; open connections are left alone."""
        self.accept_scope.cancel()


def _client_info(request: WebSocketRequest) -> ClientInfo:
    headers = {name.lower(): value for name, value in request.headers}
    user_agent = headers.get(b"user-agent")
    remote = request.remote
    ip = str(remote.address) if hasattr(remote, "address") else None
    return ClientInfo(
        user_agent=user_agent.decode("latin-1") if user_agent is not None else None, ip=ip
    )


async def serve_websockets(
    hub: Hub,
    host: str,
    port: int,
    *,
    max_message_bytes: int,
    task_status: trio.TaskStatus[WebSocketEndpoint] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve WebSocket clients until cancelled; reports the bound endpoint when listening."""

    async def handle(request: WebSocketRequest) -> None:
        if request.path.split("?", 1)[0] != WS_PATH:
            await request.reject(404, body=f"WebSocket endpoint is {WS_PATH}\n".encode())
            return
        websocket = await request.accept()
        if endpoint.accept_scope.cancel_called or not hub.has_capacity():
            hub.refuse()
            code, reason = (
                (CloseCode.GOING_AWAY, "server shutting down")
                if endpoint.accept_scope.cancel_called
                else (
                    CloseCode.TRY_AGAIN_LATER,
                    f"server at capacity ({hub.max_connections} connections)",
                )
            )
            log.warning("connection refused", reason=reason, code=int(code))
            with trio.move_on_after(REFUSE_CLOSE_TIMEOUT_S):
                await websocket.aclose(code, reason)
            return
        connection = hub.open(_client_info(request))
        try:
            await connection.serve(websocket, hub)
        finally:
            hub.close(connection)

    listeners = await trio.open_tcp_listeners(port, host=host)
    bound_port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as connections:
        server = WebSocketServer(
            handle,
            listeners,
            handler_nursery=connections,
            max_message_size=max_message_bytes,
            connect_timeout=HANDSHAKE_TIMEOUT_S,
            disconnect_timeout=REFUSE_CLOSE_TIMEOUT_S,
        )
        endpoint = WebSocketEndpoint(host=host, port=bound_port, accept_scope=trio.CancelScope())
        log.info(
            "websocket server listening", url=endpoint.url, max_connections=hub.max_connections
        )
        task_status.started(endpoint)
        with endpoint.accept_scope:
            await server.run()
