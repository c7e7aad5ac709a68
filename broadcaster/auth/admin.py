"""Admin tokens: who may read ``/api/websocket/status`` and ``/metrics`` (``--admin-token-file``).

The file holds one or two tokens, one per line (blank lines ignored). Two lines are for
rotation without a restart: add the new token as a second line, move the scrapers to it,
remove the old line. The file is looked at (one ``stat``) at most once per
:data:`ADMIN_RECHECK_INTERVAL_S` and read again when its size, mtime or inode changed; a read
that fails or finds no token keeps the last good tokens and logs a warning.

The stat and the read are synchronous: a stat costs microseconds once a second, and the file is
a few bytes, so moving them to a thread would cost more than it saves.
"""

from __future__ import annotations

import hmac
import os
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from broadcaster.errors import ConfigError

log = structlog.get_logger("broadcaster.auth")

ADMIN_RECHECK_INTERVAL_S = 1.0
ADMIN_TOKEN_FLAG = "--admin-token-file"

_Stamp = tuple[int, int, int]
_MISSING: _Stamp = (-1, -1, -1)


def read_admin_tokens(path: Path) -> tuple[bytes, ...]:
    """The tokens in ``path``, one per non-blank line.

    Raises:
        ConfigError: unreadable, or no token in it.
    """
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            ADMIN_TOKEN_FLAG, str(path), f"cannot be read: {exc.strerror or exc}"
        ) from None
    tokens = tuple(line.strip() for line in text.splitlines() if line.strip())
    if not tokens:
        raise ConfigError(ADMIN_TOKEN_FLAG, str(path), "holds no token")
    return tokens


def _stamp(path: Path) -> _Stamp:
    status = os.stat(path)
    return (status.st_mtime_ns, status.st_size, status.st_ino)


class AdminTokens:
    """The admin tokens of one file, checked in constant time, reloaded when it changes.

    Args:
        path: the ``--admin-token-file``.
        clock: monotonic seconds (tests pass their own to skip the one-second wait).

    Raises:
        ConfigError: the file is unreadable or holds no token (at construction only).
    """

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._path = path
        self._clock = clock
        self._tokens = read_admin_tokens(path)
        self._stamp = _stamp(path)
        self._checked_at = clock()

    def check(self, authorization: bytes | str | None) -> bool:
        """Whether an ``Authorization`` header value is ``Bearer <one of the tokens>``.

        Every token is compared (with :func:`hmac.compare_digest`), so the time taken says
        nothing about which token or how much of it matched. Never raises.
        """
        self._reload_if_changed()
        presented = _bearer_token(authorization)
        if presented is None:
            return False
        matched = False
        for token in self._tokens:
            matched |= hmac.compare_digest(presented, token)
        return matched

    def _reload_if_changed(self) -> None:
        now = self._clock()
        if now - self._checked_at < ADMIN_RECHECK_INTERVAL_S:
            return
        self._checked_at = now
        try:
            stamp = _stamp(self._path)
        except OSError as exc:
            if self._stamp != _MISSING:  # warned once, until the file is back
                log.warning(
                    "admin token file unusable: kept the previous tokens",
                    path=str(self._path),
                    problem=str(exc),
                )
            self._stamp = _MISSING
            return
        if stamp == self._stamp:
            return
        # Recorded even if the read fails, so a broken file is warned about once per change.
        self._stamp = stamp
        try:
            self._tokens = read_admin_tokens(self._path)
        except ConfigError as exc:
            log.warning(
                "admin token file unusable: kept the previous tokens",
                path=str(self._path),
                problem=exc.problem,
            )
            return
        log.info("admin token file reloaded", path=str(self._path), tokens=len(self._tokens))


def _bearer_token(authorization: bytes | str | None) -> bytes | None:
    if authorization is None:
        return None
    if isinstance(authorization, str):
        authorization = authorization.encode("utf-8", "surrogatepass")
    scheme, _, token = authorization.strip().partition(b" ")
    token = token.strip()
    if scheme.lower() != b"bearer" or not token:
        return None
    return token
