"""The token of one connection: when it expires, and its in-band refresh.

A :class:`TokenLease` lives as long as its connection. The receive loop tells it what the
server said (the ``welcome``'s or an ``auth_refreshed``'s ``authExpiresAt``, an
``invalid_token`` error); :meth:`TokenLease.keep_fresh`, a task beside the receive loop,
sends ``{"type": "auth", "token": ...}`` when :func:`~broadcaster.client.auth.refresh_delay_s`
says and waits for the answer. The timing rules are in :mod:`broadcaster.client.auth`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import trio

from broadcaster.client.auth import (
    REFRESH_ANSWER_TIMEOUT_S,
    TokenSource,
    TokenUnavailable,
    expires_in_s,
    refresh_delay_s,
)
from broadcaster.client.link import Link
from broadcaster.client.messages import JSON, encode
from broadcaster.client.status import StatusBoard
from broadcaster.protocol import ErrorCode

log = logging.getLogger(__name__)


@dataclass
class _Refresh:
    """A refresh waiting for its answer."""

    answered: trio.Event = field(default_factory=trio.Event)
    error: str | None = None


@dataclass
class TokenLease:
    """The token of one connection, as far as the client knows it."""

    board: StatusBoard
    url: str
    expires_at: float | None = None
    """Trio time at which the token expires; None while unknown (no auth, or no expiry)."""
    _pending: _Refresh | None = None

    def expiry_known(self, auth_expires_at: object) -> None:
        """The server said when the token expires (``authExpiresAt``)."""
        left_s = expires_in_s(auth_expires_at, time.time())
        if left_s is None:
            return
        # The wall clock only says how long is left; the wait itself is in trio time.
        self.expires_at = trio.current_time() + left_s
        self.board.update(auth_expires_at=auth_expires_at)

    def on_refreshed(self, message: JSON) -> None:
        """An ``auth_refreshed`` arrived."""
        self.expiry_known(message.get("authExpiresAt"))
        self.board.update(auth_error=None)
        if self._pending is not None:
            self._pending.answered.set()

    def on_error(self, message: JSON) -> None:
        """An ``error`` arrived: an ``invalid_token`` answers a pending refresh."""
        if message.get("code") == ErrorCode.INVALID_TOKEN and self._pending is not None:
            self._pending.error = f"invalid_token: {message.get('message')}"
            self._pending.answered.set()

    async def keep_fresh(self, link: Link, source: TokenSource) -> None:
        """Refresh the token in-band before it expires, until too little is left to try."""
        while self.expires_at is not None:
            delay_s = refresh_delay_s(self.expires_at - trio.current_time())
            if delay_s is None:
                return  # too late to try: the server closes with 4005, the loop reconnects
            await trio.sleep(delay_s)
            refresh = self._pending = _Refresh()
            try:
                await self._send(link, source, refresh)
            finally:
                self._pending = None
            if refresh.error is None:
                log.info("token refreshed", extra={"url": self.url})
                continue
            self.board.update(auth_error=refresh.error)
            log.warning(
                "token refresh failed: %s; the connection keeps its token until it expires",
                refresh.error,
                extra={"url": self.url, "reason": refresh.error},
            )

    async def _send(self, link: Link, source: TokenSource, refresh: _Refresh) -> None:
        try:
            token = await source.get()
        except TokenUnavailable as exc:
            refresh.error = str(exc)
            return
        await link.ws.send_message(encode({"type": "auth", "token": token}))
        with trio.move_on_after(REFRESH_ANSWER_TIMEOUT_S):
            await refresh.answered.wait()
        if not refresh.answered.is_set():
            refresh.error = f"no answer within {REFRESH_ANSWER_TIMEOUT_S:g} s"
