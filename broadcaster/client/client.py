"""The public client: :func:`open_client` and the :class:`BroadcasterClient` it yields.

::

    async with open_client("ws://127.0.0.1:8765/ws", topics=["overview"]) as client:
        async for update in client:
            print(update.topic, update.seq, update.data)

The connection loop itself is in :mod:`broadcaster.client.loop`.
"""

from __future__ import annotations

import random
import ssl
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import NoReturn

import trio

from broadcaster.client.auth import TokenProvider, TokenSource
from broadcaster.client.backoff import HeartbeatPolicy, ReconnectPolicy
from broadcaster.client.link import Connector, parse_url, tcp_connector
from broadcaster.client.loop import ConnectionLoop, Endpoint, LoopOptions
from broadcaster.client.mailbox import LatestPerTopic
from broadcaster.client.messages import JSON, MetricsUpdate, topic_requests
from broadcaster.client.status import (
    ClientStatus,
    ClientStopped,
    ConnectionState,
    StatusBoard,
    StatusChanges,
)
from broadcaster.client.subscriptions import Subscriptions
from broadcaster.protocol import MAX_TOPIC_NAME_CHARS

DEFAULT_RECONNECT = ReconnectPolicy()
DEFAULT_HEARTBEAT = HeartbeatPolicy()


def _check_topics(topics: Iterable[str]) -> list[str]:
    if isinstance(topics, str):
        raise TypeError("topics must be a collection of names, not one string")
    names = list(dict.fromkeys(topics))
    for name in names:
        if not isinstance(name, str) or not 0 < len(name) <= MAX_TOPIC_NAME_CHARS:
            raise ValueError(
                f"a topic is a string of 1 to {MAX_TOPIC_NAME_CHARS} characters, not {name!r}"
            )
    return names


class BroadcasterClient:
    """A broadcaster connection that keeps itself alive. Made by :func:`open_client`.

    ``async for update in client`` yields the :class:`MetricsUpdate` of the subscribed
    topics. When the caller is slower than the updates, only the latest update of each
    topic waits (see :mod:`broadcaster.client.mailbox`); ``dropped_updates`` counts the
    others. The iteration ends when the client is closed, and raises
    :class:`~broadcaster.client.status.ClientStopped` once the server closed with 4001 or 4009
    (state ``stopped``: the client does not reconnect).
    """

    def __init__(
        self,
        options: LoopOptions,
        topics: Iterable[str] | None,
        *,
        rng: random.Random,
        on_status: Callable[[ClientStatus], None] | None,
        max_pending_topics: int,
    ) -> None:
        self.url = options.url
        self._topics = Subscriptions(None if topics is None else _check_topics(topics))
        self._mailbox = LatestPerTopic(max_pending_topics)
        self._board = StatusBoard(
            ClientStatus(ConnectionState.CONNECTING, options.reconnect.max_attempts), on_status
        )
        self._loop = ConnectionLoop(options, self._topics, self._mailbox, self._board, rng)
        self._stopped: ClientStopped | None = None

    @property
    def status(self) -> ClientStatus:
        """The current status snapshot."""
        return self._board.current

    @property
    def stopped(self) -> ClientStopped | None:
        """Why the client stopped (state ``stopped``), or None while it keeps connecting."""
        return self._stopped

    def status_changes(self) -> StatusChanges:
        """``async for status in client.status_changes()``: the current status, then the
        newest after each change. Latest wins: a slow watcher skips snapshots and never
        holds the client back. ``on_status`` (of :func:`open_client`) sees every change."""
        return StatusChanges(self._board)

    async def wait_status(self, predicate: Callable[[ClientStatus], bool]) -> ClientStatus:
        """The first snapshot, the current one included, for which ``predicate`` holds
        (latest wins, so a state that lasts no time at all may be missed).

        Raises:
            ClientStopped: the client stopped first (4001 or 4009), and ``predicate`` does
                not hold for the ``stopped`` status.
            trio.ClosedResourceError: the client was closed first.
        """
        async for status in self.status_changes():
            if predicate(status):
                return status
            if self._stopped is not None:
                raise self._stopped
        raise trio.ClosedResourceError("client closed")

    @property
    def topics(self) -> tuple[str, ...]:
        """The topics the client keeps subscribed to, across reconnections. Following the
        server's defaults (no ``topics`` given), they are known after the first ``welcome``."""
        return self._topics.names

    @property
    def dropped_updates(self) -> int:
        """Updates replaced by a newer one of their topic before the caller took them."""
        return self._mailbox.dropped

    async def subscribe(self, topics: Iterable[str]) -> None:
        """Add ``topics`` to the remembered set, and subscribe at once if connected.

        Raises:
            ValueError: a name is not a string of 1 to ``MAX_TOPIC_NAME_CHARS`` characters
                (:mod:`broadcaster.protocol`).
        """
        names = _check_topics(topics)
        self._topics.add(names)
        await self._loop.send_now(topic_requests("subscribe", names))

    async def unsubscribe(self, topics: Iterable[str]) -> None:
        """Remove ``topics`` from the remembered set, and unsubscribe at once if connected.
        Their pending updates are dropped and later ones ignored.

        Raises:
            ValueError: a name is not a string of 1 to ``MAX_TOPIC_NAME_CHARS`` characters
                (:mod:`broadcaster.protocol`).
        """
        names = _check_topics(topics)
        self._topics.remove(names)
        self._mailbox.discard(names)
        await self._loop.send_now(topic_requests("unsubscribe", names))

    def __aiter__(self) -> BroadcasterClient:
        return self

    async def __anext__(self) -> MetricsUpdate:
        try:
            return await self._mailbox.get()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    async def _run(self) -> None:
        self._stopped = await self._loop.run()
        self._mailbox.close(self._stopped)
        self._board.close()

    def _close(self) -> None:
        self._mailbox.close()
        self._board.close()


@asynccontextmanager
async def open_client(
    url: str | Sequence[str],
    topics: Iterable[str] | None = None,
    *,
    reconnect: ReconnectPolicy = DEFAULT_RECONNECT,
    heartbeat: HeartbeatPolicy = DEFAULT_HEARTBEAT,
    rng: random.Random | None = None,
    connect: Connector | None = None,
    on_status: Callable[[ClientStatus], None] | None = None,
    on_error: Callable[[JSON], None] | None = None,
    connect_timeout_s: float = 10.0,
    close_timeout_s: float = 2.0,
    max_message_bytes: int = 16 * 1024 * 1024,
    max_pending_topics: int = 1024,
    token: str | TokenProvider | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[BroadcasterClient]:
    """A client of the broadcaster at ``url``, subscribed to ``topics`` (or, without them, to
    the service's default topics).

    The client's tasks run in a nursery owned by this context manager. It returns at once,
    in state ``connecting``, and keeps (re)connecting until the block exits; then the
    connection is closed with 1000 (waiting at most ``close_timeout_s``).

    Args:
        url: the service's WebSocket URL, ``ws://host:port/ws`` (or ``wss://``); or several
            (the nodes of a cluster, without a load balancer): each connection attempt goes
            to the next one in turn, so a client whose node dies moves to another.
        topics: the topics to subscribe to after every ``welcome``; the server's default
            topics that are not among them are unsubscribed. None (the default): follow the
            connection's default subscriptions (``welcome.subscribed``, the service's
            ``--default-topics``), plus :meth:`~BroadcasterClient.subscribe`, minus
            :meth:`~BroadcasterClient.unsubscribe`.
        reconnect: backoff, jitter, server-down threshold and half-open probe interval.
        heartbeat: ping interval and pong timeout.
        rng: the jitter's source; a seeded ``random.Random`` makes the waits reproducible.
            Default: a new ``random.Random()`` per client, seeded from the OS.
        connect: opens the transport of one attempt (default: TCP, with TLS for wss://), to
            whichever URL the attempt is for.
        on_status: called synchronously with every new status; must not block.
        on_error: called synchronously with every ``error`` message; must not block.
        connect_timeout_s: deadline of connecting, the handshake and the ``welcome``.
        close_timeout_s: deadline of the close handshake.
        max_message_bytes: largest server message accepted (topics can exceed 1 MiB).
        max_pending_topics: most topics with an update waiting for the caller.
        token: for a service with ``--auth-mode jwt``: a token (JWT), or a provider, a
            function returning one or an awaitable of one. A provider is called before every
            connection attempt and again before the token expires, to refresh it in-band
            (after 80 % of its remaining lifetime; :mod:`broadcaster.client.auth`). The token
            goes in the handshake's ``Authorization: Bearer`` header, never in the URL. A
            fixed string is never refreshed.
        ssl_context: for ``wss://``: the TLS settings, e.g.
            ``ssl.create_default_context(cafile="ca.pem")`` for a private CA. Default: the
            system's CAs, certificate and host name checked. Ignored with ``connect``.

    Raises:
        ValueError: a bad URL (or none) or topic name, or an empty token.
        TypeError: ``token`` is neither a string nor a callable.
    """
    urls = [url] if isinstance(url, str) else list(url)
    if not urls:
        raise ValueError("no URL to connect to")
    first, *others = (
        Endpoint(
            one, target, connect if connect is not None else tcp_connector(target, ssl_context)
        )
        for one, target in ((one, parse_url(one)) for one in urls)
    )
    options = LoopOptions(
        url=first.url,
        target=first.target,
        connect=first.connect,
        alternates=tuple(others),
        reconnect=reconnect,
        heartbeat=heartbeat,
        connect_timeout_s=connect_timeout_s,
        close_timeout_s=close_timeout_s,
        max_message_bytes=max_message_bytes,
        on_error=on_error,
        token=TokenSource(token),
    )
    client = BroadcasterClient(
        options,
        topics,
        rng=rng if rng is not None else random.Random(),
        on_status=on_status,
        max_pending_topics=max_pending_topics,
    )
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client._run)
            try:
                yield client
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The caller's own exception from the block comes out as itself, not in a group.
        if len(group.exceptions) == 1 and not isinstance(group.exceptions[0], BaseExceptionGroup):
            _reraise(group.exceptions[0])
        raise
    finally:
        client._close()


def _reraise(exc: BaseException) -> NoReturn:
    context = exc.__context__
    try:
        raise exc
    finally:
        exc.__context__ = context
        del exc, context
