"""Tokens for a service that runs with ``--auth-mode jwt`` (docs/protocol.md, Authentication).

The client takes a token or a token provider (:data:`TokenProvider`). Programs send the
token in the handshake, as ``Authorization: Bearer <jwt>`` (never in the URL: URLs end up in
logs). A provider is called:

- before every connection attempt (the first one and every reconnection), so a reconnection
  after a ``4005 token expired`` close uses a fresh token;
- before the connection's token expires, to refresh it in-band with
  ``{"type": "auth", "token": ...}`` (the server answers ``auth_refreshed`` with the new
  ``authExpiresAt``, or an ``invalid_token`` error and keeps the old token until it expires).

When to refresh (pure arithmetic, :func:`refresh_delay_s`): after :data:`REFRESH_SHARE` of the
time the token has left when its expiry becomes known (the ``welcome`` or an
``auth_refreshed``)::

    token lifetime left:  1 h      10 min    60 s    5 s
    refresh after:        48 min   8 min     48 s    4 s     (0.8 x what is left)

A refresh that fails (the provider raised, the server answered ``invalid_token``, or did not
answer within :data:`REFRESH_ANSWER_TIMEOUT_S`) is tried again after the same share of what is
then left, until less than :data:`MIN_REFRESH_LEFT_S` is left; then the client waits for the
server's ``4005`` and reconnects with a fresh token. A fixed string token is never refreshed
(there is nothing newer to send): when it expires the server closes with 4005, the client
reconnects with the same token, and the server refuses it with 4001, which stops the client.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from datetime import datetime

import trio

TokenProvider = Callable[[], str | Awaitable[str]]
"""A function returning a token (a JWT), or an awaitable of one (an ``async def``)."""

REFRESH_SHARE = 0.8
"""Refresh after this share of the token's remaining lifetime has passed."""

MIN_REFRESH_LEFT_S = 1.0
"""With less than this left, no more refresh attempts: the 4005 close and a reconnection
with a fresh token are as quick, and a refresh sent now could arrive after the expiry."""

REFRESH_ANSWER_TIMEOUT_S = 10.0
"""A refresh with no ``auth_refreshed`` or ``invalid_token`` after this long has failed."""


class TokenUnavailable(Exception):
    """The token provider raised: the connection attempt fails and is retried with backoff."""


class TokenSource:
    """Where the client's tokens come from: a fixed string, a provider, or nothing."""

    def __init__(self, token: str | TokenProvider | None) -> None:
        if isinstance(token, str) and not token:
            raise ValueError("token must not be empty")
        if token is not None and not isinstance(token, str) and not callable(token):
            raise TypeError(f"token must be a string or a callable, not {type(token).__name__}")
        self._token = token

    @property
    def configured(self) -> bool:
        """Whether the client has a token at all."""
        return self._token is not None

    @property
    def renewable(self) -> bool:
        """Whether a newer token can be asked for (a provider, not a fixed string)."""
        return callable(self._token)

    async def get(self) -> str | None:
        """The token to send now: the string, the provider's answer, or None.

        Raises:
            TokenUnavailable: the provider raised, or returned something that is not a
                non-empty string (the original exception is the ``__cause__``).
        """
        await trio.lowlevel.checkpoint()
        if self._token is None or isinstance(self._token, str):
            return self._token
        try:
            answer = self._token()
            if inspect.isawaitable(answer):
                answer = await answer
        except Exception as exc:  # not trio.Cancelled: that is a BaseException
            raise TokenUnavailable(f"token provider failed: {exc!r}") from exc
        if not isinstance(answer, str) or not answer:
            raise TokenUnavailable(f"token provider returned {type(answer).__name__}, not a token")
        return answer


def expires_in_s(auth_expires_at: object, now_unix_s: float) -> float | None:
    """Seconds from ``now_unix_s`` to an ``authExpiresAt`` (ISO 8601), or None if it is not
    a valid timestamp (then the client does not refresh and relies on 4005)."""
    if not isinstance(auth_expires_at, str):
        return None
    try:
        moment = datetime.fromisoformat(auth_expires_at)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return moment.timestamp() - now_unix_s


def refresh_delay_s(left_s: float) -> float | None:
    """How long to wait before refreshing a token with ``left_s`` seconds left, or None when
    too little is left to try (see the module docstring)."""
    if left_s < MIN_REFRESH_LEFT_S:
        return None
    return REFRESH_SHARE * left_s
