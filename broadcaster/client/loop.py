"""The connection loop: one task that connects, serves the connection, and reconnects.

Life of the loop (see :class:`~broadcaster.client.status.ConnectionState`)::

    connecting               --fails------------------> reconnecting (attempt 1/N)
    connected                --lost-------------------> reconnecting (attempt 1/N)
    connected                --server_shutdown--------> reconnecting (planned)
    connected                --closed 4005------------> reconnecting (planned, token expired)
    reconnecting (planned)   --fails------------------> reconnecting (attempt 1/N)
    reconnecting (k/N)       --fails, k < N-----------> reconnecting (attempt k+1/N)
    reconnecting (N/N)       --fails------------------> server_down
    server_down              --probe fails------------> server_down (one more probe later)
    any attempt or probe     --welcome----------------> connected
    any attempt or connected --closed 4001 or 4009----> stopped (terminal: no reconnection)

Counting: attempt k is the k-th reconnection attempt in a row without a ``welcome``; it
first waits ``min(cap, base * 2**(k-1))`` plus jitter. The first connection (made at once)
and the reconnection planned by a ``server_shutdown`` (which waits its ``reconnectAfterMs``
plus jitter) are not counted. A ``welcome`` resets the count. After N failed attempts the
server is declared down, and one probe is made every probe interval (plus jitter) until one
gets a ``welcome``.

Several URLs (the nodes of a cluster): each connection attempt goes to the next URL in
turn, so a client whose node died or is shutting down reconnects to another one; the
counting and the waits above are the same as for one URL.

Tokens (:mod:`broadcaster.client.auth`): each attempt asks the token source first and sends
the token in the handshake. A ``4005 token expired`` close is planned like a
``server_shutdown`` with ``reconnectAfterMs`` 0 (jitter only, so tokens that expire together
do not bring their clients back in the same instant), and its attempt asks the provider for
a fresh token. A 4001 (invalid or missing token: the same token would be refused again) or a
4009 (replaced by a newer connection of the same identity: reconnecting would replace that
one in turn) ends the loop in state ``stopped``.

While connected, two tasks share the link: the receive loop (updates into the mailbox,
window topics' appends merged into their windows first, see :mod:`broadcaster.client.window`,
pongs to the heartbeat) and the heartbeat (a ``ping`` every interval; no ``pong`` in time
means the link is dead). The first to fail ends the link. With a token provider and a
``welcome`` that says ``authExpiresAt``, a third task refreshes the token in-band before it
expires; a failed refresh is reported and the connection goes on until the expiry.

Logging goes through the standard library's ``logging`` (logger ``broadcaster.client.loop``),
not structlog: a library must not print in a program that did not ask for logs, and
structlog unconfigured prints to stdout. The package adds a ``NullHandler`` (see
``broadcaster/client/__init__.py``), so nothing is printed until the application configures
logging. Each line's values are in its message, for plain ``logging`` set-ups, and also in
``extra``, for structured ones (``broadcaster.logs`` renders them as JSON keys).
"""

from __future__ import annotations

import contextlib
import enum
import itertools
import logging
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import trio
from trio_websocket import ConnectionClosed

from broadcaster.client import backoff
from broadcaster.client.auth import TokenSource
from broadcaster.client.backoff import HeartbeatPolicy, ReconnectPolicy
from broadcaster.client.link import (
    LINK_ERRORS,
    Connector,
    Link,
    LinkDead,
    Target,
    close_of,
    describe_end,
    open_link,
)
from broadcaster.client.mailbox import LatestPerTopic
from broadcaster.client.messages import (
    JSON,
    as_update,
    decode,
    encode,
    reconnect_after_s,
    topic_requests,
)
from broadcaster.client.refresh import TokenLease
from broadcaster.client.status import ClientStopped, ConnectionState, StatusBoard
from broadcaster.client.subscriptions import Subscriptions
from broadcaster.client.window import Windows
from broadcaster.protocol import CloseCode

log = logging.getLogger(__name__)

STOP_CODES = frozenset({CloseCode.AUTH_FAILED, CloseCode.REPLACED})
"""Close codes after which reconnecting as is cannot help: the client stops."""


class _Next(enum.Enum):
    """The kind of the next attempt; only failed ``COUNTED`` attempts count."""

    FIRST = enum.auto()
    COUNTED = enum.auto()
    PLANNED = enum.auto()
    PROBE = enum.auto()


@dataclass
class _Ping:
    id: int
    answered: trio.Event = field(default_factory=trio.Event)
    answered_at: float = 0.0


@dataclass
class _Attempt:
    """What one connection attempt came to."""

    welcomed: bool = False
    reconnect_after_s: float | None = None
    ended_by: str | None = None
    closed_with: tuple[int, str] | None = None
    ping: _Ping | None = None
    lease: TokenLease | None = None
    # The window topics' windows: per connection, as the server sends them whole to each.
    windows: Windows = field(default_factory=Windows)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One URL the client may connect to, parsed, with the transport that reaches it."""

    url: str
    target: Target
    connect: Connector


@dataclass(frozen=True, slots=True)
class LoopOptions:
    """Everything the loop needs that does not change while it runs.

    ``url``, ``target`` and ``connect`` are the first endpoint; ``alternates`` the others,
    tried in turn after it.
    """

    url: str
    target: Target
    connect: Connector
    reconnect: ReconnectPolicy
    heartbeat: HeartbeatPolicy
    connect_timeout_s: float
    close_timeout_s: float
    max_message_bytes: int
    on_error: Callable[[JSON], None] | None
    token: TokenSource
    alternates: tuple[Endpoint, ...] = ()

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        """Every endpoint, the first URL first."""
        return (Endpoint(self.url, self.target, self.connect), *self.alternates)


class ConnectionLoop:
    """Runs the connections of one client. ``topics`` is what the client follows (asked for
    again at each welcome), ``mailbox`` and ``board`` are where updates and status go."""

    def __init__(
        self,
        options: LoopOptions,
        topics: Subscriptions,
        mailbox: LatestPerTopic,
        board: StatusBoard,
        rng: random.Random,
    ) -> None:
        self._options = options
        self._endpoints = options.endpoints
        self._endpoint = 0  # the one the next attempt goes to
        self._topics = topics
        self._mailbox = mailbox
        self._board = board
        self._rng = rng
        self._live: Link | None = None
        self._ping_ids = itertools.count(1)

    async def run(self) -> ClientStopped:
        """Connect, serve, reconnect, until cancelled or the server closes with a code in
        :data:`STOP_CODES`; then the state is ``stopped`` and the reason is returned."""
        policy, failures, probes, kind = self._options.reconnect, 0, 0, _Next.FIRST
        while True:
            attempt = await self._connect_once()
            self._endpoint = (self._endpoint + 1) % len(self._endpoints)
            if attempt.welcomed:
                failures = 0
            elif kind is _Next.COUNTED:
                failures += 1
            lost = {
                "connection_id": None,
                "rtt_ms": None,
                "last_error": attempt.ended_by,
                "auth_expires_at": None,
                "token_expired": False,
            }
            code, reason = attempt.closed_with or (None, "")
            if code in STOP_CODES:
                return self._stop(code, reason, lost)
            if code == CloseCode.TOKEN_EXPIRED:
                kind = _Next.PLANNED
                wait_s = backoff.planned_wait_s(policy, 0.0, self._rng)
                state, counted = ConnectionState.RECONNECTING, 0
                lost["token_expired"] = True
            elif attempt.reconnect_after_s is not None:
                kind = _Next.PLANNED
                wait_s = backoff.planned_wait_s(policy, attempt.reconnect_after_s, self._rng)
                state, counted = ConnectionState.RECONNECTING, 0
            elif failures >= policy.max_attempts:
                if kind is _Next.PROBE:
                    probes += 1
                else:
                    probes = 0
                    log.warning(
                        "server down after %d failed attempts in a row",
                        failures,
                        extra={"url": self._url, "failed_attempts": failures},
                    )
                kind, wait_s = _Next.PROBE, backoff.probe_wait_s(policy, self._rng)
                state, counted = ConnectionState.SERVER_DOWN, 0
            else:
                kind, counted = _Next.COUNTED, failures + 1
                wait_s = backoff.reconnect_wait_s(policy, counted, self._rng)
                state = ConnectionState.RECONNECTING
            status = self._board.update(
                state=state,
                attempt=counted,
                planned=kind is _Next.PLANNED,
                probing=False,
                probes=probes if kind is _Next.PROBE else 0,
                retry_in_s=wait_s,
                **lost,
            )
            log.info(
                "waiting %.3f s to reconnect (%s)",
                wait_s,
                status,
                extra={
                    "url": self._url,
                    "status": str(status),
                    "wait_s": round(wait_s, 3),
                },
            )
            await trio.sleep(wait_s)
            if kind is _Next.PROBE:
                self._board.update(probing=True)

    def _stop(self, code: int, reason: str, lost: Mapping[str, object]) -> ClientStopped:
        stopped = ClientStopped(code, reason)
        self._board.update(
            state=ConnectionState.STOPPED,
            attempt=0,
            planned=False,
            probing=False,
            probes=0,
            retry_in_s=None,
            **lost,
        )
        log.error(
            "stopped: %s; not reconnecting",
            stopped,
            extra={"url": self._url, "close_code": code, "reason": reason},
        )
        return stopped

    async def send_now(self, frames: Iterable[str]) -> None:
        """Send on the current connection, if there is one. A frame lost to a closing
        connection is not lost for good: the topics are sent again after the next welcome."""
        await trio.lowlevel.checkpoint()
        link = self._live
        if link is None:
            return
        with contextlib.suppress(ConnectionClosed):
            for frame in frames:
                await link.ws.send_message(frame)

    async def _connect_once(self) -> _Attempt:
        """One connection attempt and, if it gets its welcome, the whole connection."""
        attempt = _Attempt()
        try:
            await self._attempt(attempt)
        except* LINK_ERRORS as group:
            attempt.ended_by = describe_end(group)
            attempt.closed_with = close_of(group)
        log.info(
            "connection ended: %s",
            attempt.ended_by,
            extra={"url": self._url, "reason": attempt.ended_by},
        )
        return attempt

    @property
    def _url(self) -> str:
        """The URL of the current (or next) connection attempt."""
        return self._endpoints[self._endpoint].url

    async def _attempt(self, attempt: _Attempt) -> None:
        options = self._options
        endpoint = self._endpoints[self._endpoint]
        deadline = trio.current_time() + options.connect_timeout_s
        with trio.fail_at(deadline):
            token = await options.token.get()
        async with open_link(
            endpoint.connect,
            endpoint.target,
            deadline=deadline,
            close_timeout_s=options.close_timeout_s,
            max_message_bytes=options.max_message_bytes,
            token=token,
        ) as link:
            with trio.fail_at(deadline):
                welcome = await self._wait_welcome(link)
            attempt.welcomed = True
            self._live = link
            try:
                await self._serve(link, welcome, attempt)
            finally:
                self._live = None

    async def _wait_welcome(self, link: Link) -> JSON:
        while True:
            message = decode(await link.ws.get_message())
            if message is not None and message["type"] == "welcome":
                return message

    async def _serve(self, link: Link, welcome: JSON, attempt: _Attempt) -> None:
        connection_id = welcome.get("connectionId")
        lease = attempt.lease = TokenLease(self._board, self._url)
        lease.expiry_known(welcome.get("authExpiresAt"))
        self._board.update(
            state=ConnectionState.CONNECTED,
            attempt=0,
            planned=False,
            token_expired=False,
            auth_error=None,
            probing=False,
            probes=0,
            retry_in_s=None,
            connection_id=connection_id if isinstance(connection_id, str) else None,
            rtt_ms=None,
        )
        log.info(
            "connected as %s",
            connection_id,
            extra={"url": self._url, "connection_id": connection_id},
        )
        # Subscriptions belong to the connection: drop the server's default topics we do not
        # follow, and subscribe to ours again.
        subscribed = welcome.get("subscribed")
        if not isinstance(subscribed, list):
            subscribed = []
        unwanted, wanted = self._topics.after_welcome([t for t in subscribed if isinstance(t, str)])
        for frame in [
            *topic_requests("unsubscribe", unwanted),
            *topic_requests("subscribe", wanted),
        ]:
            await link.ws.send_message(frame)
        async with trio.open_nursery() as tasks:
            tasks.start_soon(self._heartbeat, link, attempt)
            if lease.expires_at is not None and self._options.token.renewable:
                tasks.start_soon(lease.keep_fresh, link, self._options.token)
            await self._receive(link, attempt)

    async def _receive(self, link: Link, attempt: _Attempt) -> None:
        while True:
            message = decode(await link.ws.get_message())
            if message is None:
                log.warning("ignored a frame that is not a JSON object with a type")
                continue
            if message["type"] == "metrics_append":
                await self._on_append(link, message, attempt)
            else:
                self._dispatch(message, attempt)

    async def _on_append(self, link: Link, message: JSON, attempt: _Attempt) -> None:
        """A window topic's append: its merged window goes to the mailbox; after a lost one,
        a ``snapshot`` request brings the whole window again."""
        topic = message.get("topic")
        if topic not in self._topics:
            return
        try:
            outcome = attempt.windows.on_append(message)
        except ValueError as exc:
            log.warning("ignored %s of topic %r", exc, topic, extra={"topic": topic})
            return
        if outcome.update is not None:
            self._mailbox.put(outcome.update)
        if outcome.ask_snapshot:
            log.info(
                "gap in the seq of window topic %r; asking for a snapshot",
                topic,
                extra={"topic": topic, "seq": message.get("seq")},
            )
            await link.ws.send_message(encode({"type": "snapshot", "topic": topic}))

    def _dispatch(self, message: JSON, attempt: _Attempt) -> None:
        kind = message["type"]
        if kind == "metrics_update":
            update = as_update(message)
            if update is None:
                topic = message.get("topic")
                log.warning(
                    "ignored a malformed metrics_update of topic %r", topic, extra={"topic": topic}
                )
            elif update.topic in self._topics:
                attempt.windows.on_update(update)
                self._mailbox.put(update)
        elif kind == "pong":
            ping = attempt.ping
            if ping is not None and message.get("id") == ping.id:
                ping.answered_at = trio.current_time()
                ping.answered.set()
        elif kind == "auth_refreshed":
            if attempt.lease is not None:
                attempt.lease.on_refreshed(message)
        elif kind == "error":
            if attempt.lease is not None:
                attempt.lease.on_error(message)
            fields = {
                "code": message.get("code"),
                "server_message": message.get("message"),
                "topic": message.get("topic"),
            }
            log.warning(
                "server error %s: %s",
                fields["code"],
                fields["server_message"],
                extra=fields,
            )
            if self._options.on_error is not None:
                self._options.on_error(message)
        elif kind == "server_shutdown":
            attempt.reconnect_after_s = reconnect_after_s(message)
            log.info(
                "server shutting down; reconnect after %s s",
                attempt.reconnect_after_s,
                extra={"reconnect_after_s": attempt.reconnect_after_s},
            )
        # Anything else (subscription_confirmed, types added later) needs nothing.

    async def _heartbeat(self, link: Link, attempt: _Attempt) -> None:
        policy = self._options.heartbeat
        while True:
            ping = attempt.ping = _Ping(next(self._ping_ids))
            sent_at = trio.current_time()
            # The timeout covers the send too: a peer that stopped reading blocks it.
            with trio.move_on_after(policy.pong_timeout_s):
                await link.ws.send_message(encode({"type": "ping", "id": ping.id}))
                await ping.answered.wait()
            if not ping.answered.is_set():
                link.graceful = False  # a peer that stopped answering will not close cleanly
                raise LinkDead(f"no pong within {policy.pong_timeout_s:g} s")
            self._board.update(rtt_ms=round((ping.answered_at - sent_at) * 1000, 3))
            await trio.sleep_until(sent_at + policy.interval_s)
