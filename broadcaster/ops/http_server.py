"""The HTTP server: hypercorn serving the app, each connection inside a containment boundary.

hypercorn 0.18's Trio worker lets an exception raised while serving one HTTP connection
escape into the server's nursery, which ends the whole process. One such exception is
reachable by any client: a request whose body is cut short by an EOF makes hypercorn send
its 400 while its own close is sending the EOF, and ``trio.BusyResourceError`` ("another
task is currently sending data on this SocketStream") escapes (see also hypercorn issue
#203). :func:`serve_http` runs hypercorn with a connection handler whose ``run`` is inside
:meth:`Containment.boundary` (stage ``http``): the failure is logged and counted, that
connection is closed (hypercorn's own ``finally`` closes it), and the server goes on.

hypercorn offers no hook for its connection handler, so the handler class its worker uses is
replaced, once, by a subclass; the subclass only adds the boundary, and only for servers
started here (their config carries the containment).
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Awaitable, Callable

import hypercorn.trio.run
import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from hypercorn.trio.tcp_server import TCPServer
from quart_trio import QuartTrio

from broadcaster.containment import Containment, Stage


class ContainedConfig(Config):
    """hypercorn's config, with the containment that guards each connection, and the
    service's TLS context (the WebSocket server's too) instead of hypercorn's own."""

    containment: Containment | None = None
    ssl_context: ssl.SSLContext | None = None

    @property
    def ssl_enabled(self) -> bool:
        return self.ssl_context is not None or super().ssl_enabled

    def create_ssl_context(self) -> ssl.SSLContext | None:
        return self.ssl_context if self.ssl_context is not None else super().create_ssl_context()


class _ContainedTCPServer(TCPServer):
    """hypercorn's connection handler, run inside a containment boundary."""

    async def run(self) -> None:
        containment = getattr(self.config, "containment", None)
        if containment is None:
            await super().run()
            return
        with containment.boundary(
            Stage.HTTP, connection_id=None, address=_peer_ip(self.stream), on_failure=_nothing
        ):
            await super().run()


def _nothing() -> None:
    """hypercorn's handler closes its stream in its ``finally``: nothing is left to end."""


def _peer_ip(stream: object) -> str | None:
    stream = getattr(stream, "transport_stream", stream)  # under TLS: a trio.SSLStream
    try:
        return str(stream.socket.getpeername()[0])  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        return None


hypercorn.trio.run.TCPServer = _ContainedTCPServer  # type: ignore[attr-defined]


def serve_on_sockets(config: Config, sockets: list[socket.socket]) -> None:
    """Make hypercorn serve on these bound sockets (``fd://`` binds) instead of binding its own:
    how ``--reuse-port`` sockets reach it (:mod:`broadcaster.reuse_port`). hypercorn takes
    the descriptors over (it listens on and closes them); the socket objects are detached."""
    config.bind = [f"fd://{sock.detach()}" for sock in sockets]


async def serve_http(
    app: QuartTrio,
    config: ContainedConfig,
    *,
    shutdown_trigger: Callable[[], Awaitable[None]],
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """hypercorn's ``serve``, every connection contained; reports the bound URLs."""
    assert config.containment is not None, "serve_http needs the config's containment"
    await serve(app, config, shutdown_trigger=shutdown_trigger, task_status=task_status)
