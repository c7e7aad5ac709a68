"""The auth gate of one connection (``--auth-mode jwt``): no welcome before a valid token, and
the connection ends when its token does.

::

                 a valid token: in the handshake (Authorization: Bearer) or the first message
    AWAITING ------------------------------------------------------------> ADMITTED
       |  another message first, an invalid token,                          |   |
       |  no token within --auth-timeout-ms                                  |   |  exp passes
       v                                                                     |   v
    close 4001 (the verifier cannot get its keys: 1013)                     |  close 4005
                                                                            |
        {"type": "auth"} again: valid, same sub and tenant -> exp moves, auth_refreshed
                                anything else              -> error invalid_token (old token kept)

On admission the hub records the identity (the per-identity cap may close the holder's oldest
connection with 4009) and sends the welcome.

Time is one cancel scope, not a flag: a watch task in the connection's nursery sleeps in it,
with the auth timeout as its deadline, then the token's ``exp`` (moved by each refresh); when
the deadline passes it closes the connection with 4001 or 4005. Verifying runs in the reader
task, so a client's messages stay in order and its reading pauses meanwhile. Both run inside
the connection's containment boundaries (the watch in one of its own). Without
authentication no gate is built: a connection pays nothing for it.

The token is never logged nor sent back; reasons come from :class:`InvalidToken`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from functools import partial
from typing import Protocol

import structlog
import trio

from broadcaster import protocol
from broadcaster.auth.identity import Identity, InvalidToken, KeysUnavailable
from broadcaster.containment import Stage
from broadcaster.protocol import CloseCode, ErrorCode, ProtocolViolation
from broadcaster.ws.connection import Connection
from broadcaster.ws.frames import Frame
from broadcaster.ws.policy import AuthPolicy

log = structlog.get_logger("broadcaster.ws.auth")

AUTH_FIRST = 'authentication required: send {"type": "auth", "token": ...} first'
KEYS_UNAVAILABLE = "authentication unavailable, try again later"
BAD_AUTHORIZATION = "the Authorization header must be 'Bearer <token>' (once)"
OTHER_HOLDER = "the new token is for another sub or tenant"


class Admission(Protocol):
    """What the gate asks of the hub once a token is valid."""

    def identify(self, connection: Connection, identity: Identity) -> None: ...

    def admit(self, connection: Connection) -> None: ...


@dataclass(frozen=True, slots=True)
class _Refused:
    """A token that was not accepted: the close code for a first token, and why."""

    code: CloseCode
    reason: str


class AuthGate:
    """Keeps one connection waiting for its token, then watches the token's expiry.

    ``authorization``: the raw values of the handshake's Authorization headers.
    """

    def __init__(
        self,
        connection: Connection,
        policy: AuthPolicy,
        hub: Admission,
        authorization: tuple[bytes, ...] = (),
    ) -> None:
        self._connection = connection
        self._policy = policy
        self._hub = hub
        self._authorization = authorization
        self._deadline = trio.CancelScope(deadline=trio.current_time() + policy.timeout_s)

    @property
    def admitted(self) -> bool:
        """Whether a valid token was presented (the connection has its welcome)."""
        return self._connection.identity is not None

    async def start(self, nursery: trio.Nursery) -> None:
        """Start watching the clock; check the handshake's token if there is one.

        Called by the connection's reader task before it reads.
        """
        nursery.start_soon(self._watch_contained)
        token = bearer_token(self._authorization)
        self._authorization = ()  # not kept for the connection's life
        if isinstance(token, _Refused):
            self._refuse(token)
        elif token is not None:
            await self._present(token)

    async def first_message(self, raw: str | bytes) -> None:
        """A message before admission: it must be a valid ``auth``, or the connection ends."""
        try:
            message = protocol.parse_client_message(raw)
        except ProtocolViolation:
            message = None
        if isinstance(message, protocol.Auth):
            await self._present(message.token)
        else:
            self._refuse(_Refused(CloseCode.AUTH_FAILED, AUTH_FIRST))

    async def refresh(self, token: str) -> None:
        """An ``auth`` message after admission: a new expiry for the same holder, or an error."""
        current = self._connection.identity
        assert current is not None, "refresh comes after admission"
        outcome = await self._verify(token)
        if self._connection.closing is not None:
            return
        if isinstance(outcome, Identity) and current.same_holder(outcome):
            self._connection.identity = replace(
                current, expires_at_unix_s=outcome.expires_at_unix_s
            )
            self._expire_at(outcome.expires_at_unix_s)
            self._connection.offer(Frame(protocol.auth_refreshed(outcome.expires_at_unix_s)))
            return
        reason = outcome.reason if isinstance(outcome, _Refused) else OTHER_HOLDER
        self._connection.send_error(
            ErrorCode.INVALID_TOKEN, f"token not replaced: {reason}; the current one stays"
        )

    async def _present(self, token: str) -> None:
        outcome = await self._verify(token)
        if self._connection.closing is not None:
            return  # timed out (or gone) while verifying
        if isinstance(outcome, _Refused):
            self._refuse(outcome)
            return
        self._hub.identify(self._connection, outcome)
        self._expire_at(outcome.expires_at_unix_s)
        self._hub.admit(self._connection)

    async def _verify(self, token: str) -> Identity | _Refused:
        """The token's identity; never longer than the auth timeout."""
        with trio.move_on_after(self._policy.timeout_s):
            try:
                return await self._policy.verifier.verify(token)
            except InvalidToken as invalid:
                return _Refused(CloseCode.AUTH_FAILED, invalid.reason)
            except KeysUnavailable:
                pass
        return _Refused(CloseCode.TRY_AGAIN_LATER, KEYS_UNAVAILABLE)

    def _expire_at(self, expires_at_unix_s: float) -> None:
        self._deadline.deadline = trio.current_time() + max(0.0, expires_at_unix_s - time.time())

    async def _watch_contained(self) -> None:
        """:meth:`_watch` inside a containment boundary: a failure ends this connection only."""
        connection = self._connection
        with connection.containment.boundary(
            Stage.HANDLER,
            connection_id=connection.id,
            address=connection.client_info.ip,
            on_failure=partial(connection.close, CloseCode.INTERNAL_ERROR, "internal error"),
        ):
            await self._watch()

    async def _watch(self) -> None:
        """Sleep until the deadline: the auth timeout, then the token's expiry."""
        with self._deadline:
            await trio.sleep_forever()
        await trio.lowlevel.checkpoint_if_cancelled()  # the connection ended meanwhile
        if self._connection.closing is not None:
            return
        if not self.admitted:
            timeout_ms = round(self._policy.timeout_s * 1000)
            self._refuse(_Refused(CloseCode.AUTH_FAILED, f"no token within {timeout_ms} ms"))
            return
        self._connection.counters.tokens_expired += 1
        self._connection.close(CloseCode.TOKEN_EXPIRED, "token expired")
        log.info("token expired", connection_id=self._connection.id)

    def _refuse(self, refused: _Refused) -> None:
        """Close a connection that has no valid token: 4001 (or 1013: keys unavailable)."""
        if self._connection.closing is not None:
            return
        if refused.code == CloseCode.AUTH_FAILED:
            self._connection.counters.auth_failures += 1
        self._connection.close(refused.code, refused.reason)
        log.info(
            "authentication failed",
            connection_id=self._connection.id,
            ip=self._connection.client_info.ip,
            code=int(refused.code),
            reason=refused.reason,
        )


def bearer_token(authorization: tuple[bytes, ...]) -> str | _Refused | None:
    """The token of an ``Authorization: Bearer <token>`` header; None without one.

    Another scheme (a browser may send cached Basic credentials) is no token: the client may
    still send its token as the first message.
    """
    bearers = [v for v in authorization if v[:7].lower() == b"bearer "]
    if not bearers:
        return None
    token = bearers[0][7:].strip(b" \t")
    if len(authorization) > 1 or not token or not token.isascii():
        return _Refused(CloseCode.AUTH_FAILED, BAD_AUTHORIZATION)
    if len(token) > protocol.MAX_TOKEN_CHARS:
        return _Refused(CloseCode.AUTH_FAILED, f"token over {protocol.MAX_TOKEN_CHARS} characters")
    return token.decode("ascii")
