"""An authenticated identity: what a valid token says about its holder, and what it allows.

A token's claims are checked once, by the verifier (:mod:`broadcaster.auth.tokens`); what
remains is this small value, which the connection keeps and the hub consults.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

TENANT_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
"""What a ``tenant`` claim may be; anything else makes the token invalid."""


class InvalidToken(Exception):
    """A token that cannot be accepted. ``reason`` says why in words a client may read
    (it never contains the token)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class KeysUnavailable(Exception):
    """No key can be had to check a token: the key set endpoint is down, slow or answers
    garbage. A server-side outage, not the client's fault: the connection side closes such a
    client with 1013 (try again later), never 4001, so it keeps its token. The message is for
    the log; it is not sent to clients."""


@dataclass(frozen=True, slots=True)
class Identity:
    """Who holds a connection, from its token.

    ``topics``: the topic names or glob patterns (``region-*``) the token allows, or None for
    every topic. ``expires_at_unix_s``: the token's ``exp``.
    """

    sub: str
    tenant: str | None
    topics: tuple[str, ...] | None
    expires_at_unix_s: float

    def may_subscribe(self, topic: str, *, tenant_topic: bool) -> bool:
        """Whether this identity may subscribe to ``topic`` (a tenant topic needs a tenant)."""
        if tenant_topic and self.tenant is None:
            return False
        if self.topics is None:
            return True
        return any(fnmatch.fnmatchcase(topic, pattern) for pattern in self.topics)

    def allowed(self, topics: Iterable[str], tenant_topics: frozenset[str]) -> list[str]:
        """The topics among ``topics`` this identity may subscribe to, in order."""
        return [t for t in topics if self.may_subscribe(t, tenant_topic=t in tenant_topics)]

    def same_holder(self, other: Identity) -> bool:
        """Whether ``other`` may replace this identity on a connection (same sub and tenant)."""
        return self.sub == other.sub and self.tenant == other.tenant


class TokenVerifier(Protocol):
    """Checks a token and says who holds it. Implementations are Trio-native."""

    async def verify(self, token: str) -> Identity:
        """The identity a valid token carries.

        Raises:
            InvalidToken: bad signature, wrong algorithm, ``aud``/``iss`` mismatch, expired,
                missing ``sub`` or ``exp``, malformed claims, or an unknown key.
            KeysUnavailable: the keys cannot be fetched now (retry later).
        """
        ...
