"""One WebSocket connection of the client: its transport, handshake, clean close, and the
errors that end it (:data:`LINK_ERRORS`).

The transport comes from a :data:`Connector`, an async callable returning a connected
``trio.abc.Stream`` (TCP by default; tests pass an in-memory stream). The WebSocket layer is
trio-websocket's ``wrap_client_stream``, whose reader task runs in a nursery owned here.

Why not ``open_websocket_url``: when the server closes first, trio-websocket 0.12's client
``aclose`` returns early without closing the TCP stream (the socket is left to the garbage
collector) or its message queue (its reader task can stay blocked on it). The service
closes first on every refusal, slow-consumer cut-off and shutdown. Owning the stream and the
reader's nursery fixes both: on exit the stream is always closed and the reader task is
always cancelled, whoever closed first.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    WebSocketConnection,
    wrap_client_stream,
)

from broadcaster import __version__
from broadcaster.client.auth import TokenUnavailable
from broadcaster.protocol import CloseCode

USER_AGENT = f"broadcaster-client/{__version__} (python; trio-websocket)"
"""Sent in the handshake's ``User-Agent`` header, so the service's status API and logs tell
this client (``clientInfo.userAgent``) from a browser or another program; trio-websocket
sends none of its own."""

Connector = Callable[[], Awaitable[trio.abc.Stream]]
"""Opens the transport of one connection attempt; raises ``OSError`` when it cannot."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where a ``ws://`` or ``wss://`` URL points."""

    host: str
    port: int
    resource: str
    secure: bool

    @property
    def host_header(self) -> str:
        default_port = 443 if self.secure else 80
        return self.host if self.port == default_port else f"{self.host}:{self.port}"


def parse_url(url: str) -> Target:
    """Split a WebSocket URL.

    Raises:
        ValueError: not a ``ws://`` or ``wss://`` URL with a host.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"not a ws:// or wss:// URL: {url!r}")
    secure = parts.scheme == "wss"
    port = parts.port or (443 if secure else 80)
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(parts.hostname, port, resource, secure)


def tcp_connector(target: Target, ssl_context: ssl.SSLContext | None = None) -> Connector:
    """The default connector: TCP to the target, with TLS for ``wss://``.

    ``ssl_context``: for ``wss://``, the TLS settings, e.g. a context that trusts a private
    CA (``ssl.create_default_context(cafile=...)``); default: the system's CAs, with the
    certificate and host name checked.
    """
    context = ssl_context if ssl_context is not None else ssl.create_default_context()

    async def connect() -> trio.abc.Stream:
        if target.secure:
            stream = await trio.open_ssl_over_tcp_stream(
                target.host, target.port, ssl_context=context, https_compatible=True
            )
            try:
                # Now, so a refused certificate fails the attempt at once and says why
                # (trio-websocket would otherwise wait for a handshake answer until the
                # deadline).
                await stream.do_handshake()
            except BaseException:
                await trio.aclose_forcefully(stream)
                raise
            return stream
        return await trio.open_tcp_stream(target.host, target.port)

    return connect


@dataclass
class Link:
    """An open WebSocket connection. ``graceful`` False skips the close handshake on exit
    (a peer that stopped answering would only make the close wait its timeout)."""

    ws: WebSocketConnection
    graceful: bool = True


@asynccontextmanager
async def open_link(
    connect: Connector,
    target: Target,
    *,
    deadline: float,
    close_timeout_s: float,
    max_message_bytes: int,
    token: str | None = None,
) -> AsyncIterator[Link]:
    """Connect and complete the WebSocket handshake before ``deadline`` (trio time).

    ``token`` goes in the handshake as ``Authorization: Bearer <token>``.

    On exit the close handshake is tried for at most ``close_timeout_s`` (shielded, so it
    also runs when cancelled), then the stream is closed and the reader task cancelled.

    Raises:
        OSError: the connector failed.
        trio.TooSlowError: the deadline passed.
        trio_websocket.HandshakeError: the server rejected the handshake.
        trio_websocket.ConnectionClosed: the connection closed (from the body).
    Errors come wrapped in an exception group, as from any nursery.
    """
    async with trio.open_nursery() as reader_nursery:
        with trio.fail_at(deadline):
            stream = await connect()
        link: Link | None = None
        headers = [(b"User-Agent", USER_AGENT.encode("ascii"))]
        if token is not None:
            headers.append((b"Authorization", f"Bearer {token}".encode()))
        try:
            with trio.fail_at(deadline):
                # trio-websocket types the stream as a socket or TLS stream; any
                # trio.abc.Stream works (it only sends, receives and closes it).
                ws = await wrap_client_stream(
                    reader_nursery,
                    cast(Any, stream),
                    target.host_header,
                    target.resource,
                    extra_headers=headers,
                    max_message_size=max_message_bytes,
                )
            link = Link(ws)
            yield link
        finally:
            with trio.move_on_after(close_timeout_s, shield=True):
                try:
                    if link is not None and link.graceful:
                        await link.ws.aclose()
                finally:
                    # Also when the server closed first: aclose then left the stream open.
                    await stream.aclose()
            reader_nursery.cancel_scope.cancel()


class LinkDead(Exception):
    """The server stopped answering the client's pings."""


# What ends one connection (or attempt) and leads to a reconnection. Anything else is a bug
# and propagates out of open_client.
LINK_ERRORS = (
    OSError,
    HandshakeError,
    ConnectionClosed,
    trio.BrokenResourceError,
    trio.TooSlowError,
    LinkDead,
    TokenUnavailable,
)


def _first(group: BaseExceptionGroup[Exception]) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def close_of(group: BaseExceptionGroup[Exception]) -> tuple[int, str] | None:
    """The server's close code and reason, when a close frame ended the connection."""
    exc = _first(group)
    if isinstance(exc, ConnectionClosed) and exc.reason is not None:
        return exc.reason.code, exc.reason.reason or ""
    return None


def describe_end(group: BaseExceptionGroup[Exception]) -> str:
    """Why a connection ended, in a few words, from what ended it."""
    exc = _first(group)
    if isinstance(exc, ConnectionClosed):
        if exc.reason is None:
            return "connection closed"
        text = f": {exc.reason.reason}" if exc.reason.reason else ""
        code = exc.reason.code
        # The service's private codes by their names; wsproto calls every 4xxx
        # PRIVATE_RESERVED. The RFC 6455 ones keep wsproto's names.
        private = {member.value: member.name for member in CloseCode if member.value >= 4000}
        name = private.get(code, exc.reason.name)
        return f"closed with {code} ({name}{text})"
    if isinstance(exc, ConnectionRejected):
        return f"handshake rejected with HTTP {exc.status_code}"
    if isinstance(exc, trio.TooSlowError):
        return "timed out before the welcome"
    if isinstance(exc, OSError):
        return f"cannot connect: {exc}"
    if isinstance(exc, trio.BrokenResourceError) and isinstance(exc.__cause__, ssl.SSLError):
        return f"TLS handshake failed: {exc.__cause__}"
    return str(exc) or type(exc).__name__
