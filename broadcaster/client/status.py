"""What the client is doing, as an immutable snapshot, and how to wait for it to change.

:class:`StatusBoard` holds the current :class:`ClientStatus`. Publishing never waits: each
watcher only remembers the last version it saw and, when it asks again, gets the newest
snapshot (latest wins). A slow watcher therefore skips intermediate snapshots instead of
holding the client back; a watcher that must see every change uses the ``on_status``
callback, which is called synchronously on each change.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import trio

EXCELLENT_MAX_RTT_MS = 100.0
GOOD_MAX_RTT_MS = 300.0


class ConnectionState(enum.StrEnum):
    """Where the client is in its connection life cycle."""

    CONNECTING = "connecting"
    """The first connection attempt, made at once."""
    CONNECTED = "connected"
    """The server sent its ``welcome``; updates flow."""
    RECONNECTING = "reconnecting"
    """Waiting before, or making, a reconnection attempt."""
    SERVER_DOWN = "server_down"
    """``max_attempts`` attempts failed in a row; probing on a slow schedule (half-open)."""
    STOPPED = "stopped"
    """The server said not to reconnect (close 4001: invalid or missing token; 4009: replaced
    by a newer connection of the same identity). Terminal: ``last_error`` says why, and the
    client's iteration raises :class:`ClientStopped`."""


class ClientStopped(Exception):
    """The server ended the connection with a close code that forbids reconnecting as is.

    Raised by ``async for update in client`` and :meth:`BroadcasterClient.wait_status` once
    the client's state is ``stopped``.

    Attributes:
        code: the close code (4001 invalid or missing token, 4009 replaced).
        reason: the server's close reason, e.g. ``token expired`` or ``no token``.
    """

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason
        super().__init__(f"the server closed the connection with {code}: {reason}")


class ConnectionQuality(enum.StrEnum):
    """A label for the round-trip time of the client's own pings."""

    EXCELLENT = "excellent"
    GOOD = "good"
    POOR = "poor"


def quality_for_rtt(rtt_ms: float | None) -> ConnectionQuality | None:
    """``excellent`` up to 100 ms, ``good`` up to 300 ms, ``poor`` above; None for None."""
    if rtt_ms is None:
        return None
    if rtt_ms <= EXCELLENT_MAX_RTT_MS:
        return ConnectionQuality.EXCELLENT
    if rtt_ms <= GOOD_MAX_RTT_MS:
        return ConnectionQuality.GOOD
    return ConnectionQuality.POOR


@dataclass(frozen=True, slots=True)
class ClientStatus:
    """One snapshot of the client's state.

    Attributes:
        state: see :class:`ConnectionState`.
        max_attempts: the policy's ``max_attempts`` (the N of "attempt k/N").
        attempt: the reconnection attempt waited for or in progress (1-based), 0 when none
            is being counted: connecting, connected, server down, or a reconnection planned
            by a ``server_shutdown``.
        planned: this reconnection follows a ``server_shutdown`` or a ``4005 token
            expired`` close and does not count as a failed attempt.
        token_expired: this planned reconnection follows a 4005 (a fresh token is asked for).
        probing: while ``server_down``: a half-open probe is in progress.
        probes: while ``server_down``: how many probes failed so far.
        retry_in_s: while waiting to reconnect or probe: how long the wait is.
        connection_id: the ``connectionId`` of the current connection's ``welcome``.
        rtt_ms: the round trip of the last answered ping on the current connection; None
            before its first ``pong``.
        last_error: why the last connection or attempt ended, if it did.
        auth_expires_at: with a token: when the current connection's token expires
            (``authExpiresAt`` of the ``welcome`` or the last ``auth_refreshed``).
        auth_error: with a token: why the last in-band refresh failed; None after one
            succeeds.
    """

    state: ConnectionState
    max_attempts: int
    attempt: int = 0
    planned: bool = False
    probing: bool = False
    probes: int = 0
    retry_in_s: float | None = None
    connection_id: str | None = None
    rtt_ms: float | None = None
    last_error: str | None = None
    token_expired: bool = False
    auth_expires_at: str | None = None
    auth_error: str | None = None

    @property
    def quality(self) -> ConnectionQuality | None:
        """The label of ``rtt_ms`` (see :func:`quality_for_rtt`)."""
        return quality_for_rtt(self.rtt_ms)

    def describe(self) -> str:
        """The state for people: ``reconnecting (attempt 2/5)``, ``server_down (probing)``."""
        if self.state is ConnectionState.RECONNECTING:
            if self.token_expired:
                return "reconnecting (token expired)"
            if self.planned:
                return "reconnecting (after server_shutdown)"
            return f"reconnecting (attempt {self.attempt}/{self.max_attempts})"
        if self.state is ConnectionState.SERVER_DOWN:
            return "server_down (probing)" if self.probing else "server_down"
        if self.state is ConnectionState.STOPPED and self.last_error:
            return f"stopped ({self.last_error})"
        return self.state.value

    def __str__(self) -> str:
        return self.describe()


class StatusBoard:
    """The current :class:`ClientStatus`; publishing never blocks, watchers get the latest."""

    def __init__(
        self, initial: ClientStatus, on_change: Callable[[ClientStatus], None] | None = None
    ) -> None:
        self._status = initial
        self._version = 0
        self._lot = trio.lowlevel.ParkingLot()
        self._on_change = on_change
        self._closed = False

    @property
    def current(self) -> ClientStatus:
        return self._status

    @property
    def version(self) -> int:
        """Grows by one on each change."""
        return self._version

    def update(self, **changes: Any) -> ClientStatus:
        """Replace fields of the status; a change wakes the watchers and calls ``on_change``."""
        new = replace(self._status, **changes)
        if new != self._status:
            self._status = new
            self._version += 1
            self._lot.unpark_all()
            if self._on_change is not None:
                self._on_change(new)
        return self._status

    def close(self) -> None:
        """The client is closed: watchers waiting for a change stop."""
        self._closed = True
        self._lot.unpark_all()

    async def wait_newer(self, version: int) -> tuple[int, ClientStatus] | None:
        """Wait until the version is past ``version``; returns the newest version and status,
        or None once the board is closed and nothing newer is left."""
        await trio.lowlevel.checkpoint()
        while self._version <= version:
            if self._closed:
                return None
            await self._lot.park()
        return self._version, self._status


class StatusChanges:
    """``async for status in client.status_changes()``: the current status first, then the
    newest one after each change (latest wins; intermediate snapshots may be skipped). The
    iteration ends when the client is closed."""

    def __init__(self, board: StatusBoard) -> None:
        self._board = board
        self._seen: int | None = None

    def __aiter__(self) -> StatusChanges:
        return self

    async def __anext__(self) -> ClientStatus:
        if self._seen is None:
            await trio.lowlevel.checkpoint()
            self._seen = self._board.version
            return self._board.current
        newer = await self._board.wait_newer(self._seen)
        if newer is None:
            raise StopAsyncIteration
        self._seen, status = newer
        return status
