"""Checking a JWT and turning its claims into an :class:`~broadcaster.auth.identity.Identity`.

PyJWT does the parsing, the signature and the registered claims (``exp``, ``nbf``, ``iat``,
``aud``, ``iss``); this module chooses the key and the one algorithm PyJWT may use for it, maps
PyJWT's exceptions to the reasons of :mod:`broadcaster.auth.reasons`, and checks our own claims:

- ``sub``: required, a non-empty string;
- ``exp``: required, a number; the token is expired once ``exp <= now``, without leeway, because
  the connection is closed with 4005 at ``exp`` (a token accepted after its ``exp`` would be
  closed at once);
- ``tenant``: optional, must match ``TENANT_PATTERN``;
- ``topics``: optional, a list of non-empty strings (names or glob patterns).

Clock skew: ``nbf`` and ``iat`` are given :data:`CLOCK_SKEW_LEEWAY_S`, so a token minted by an
issuer whose clock runs a little ahead is not refused as "not yet valid".
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jwt

from broadcaster.auth import reasons
from broadcaster.auth.identity import TENANT_PATTERN, Identity, InvalidToken
from broadcaster.auth.keys import KeySource

CLOCK_SKEW_LEEWAY_S = 5
# A JWT is a few hundred bytes, a few kilobytes with many topics; refusing longer ones before
# decoding bounds the work a client can ask for (the message size limit bounds it too).
MAX_TOKEN_CHARS = 16 * 1024


class JwtVerifier:
    """The :class:`~broadcaster.auth.identity.TokenVerifier` for ``--auth-mode jwt``.

    Args:
        keys: where the key for a token comes from.
        algorithms: the accepted algorithms (never ``none``; see ``resolve_algorithms``).
        audience, issuer: when given, tokens must carry a matching ``aud`` / ``iss``.
        clock: Unix time in seconds (for the ``exp`` check).
    """

    def __init__(
        self,
        keys: KeySource,
        algorithms: tuple[str, ...],
        *,
        audience: str | None = None,
        issuer: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not algorithms or "none" in (alg.lower() for alg in algorithms):
            raise ValueError(f"not a usable list of algorithms: {algorithms!r}")
        self._keys = keys
        self._algorithms = algorithms
        self._audience = audience
        self._issuer = issuer
        self._clock = clock

    @property
    def algorithms(self) -> tuple[str, ...]:
        """The accepted algorithms."""
        return self._algorithms

    async def verify(self, token: str) -> Identity:
        """The identity ``token`` carries.

        Raises:
            InvalidToken: with one of the reasons of :mod:`broadcaster.auth.reasons`.
            KeysUnavailable: the key set cannot be fetched now.
        """
        if len(token) > MAX_TOKEN_CHARS:
            raise InvalidToken(reasons.TOO_LONG)
        try:
            raw = token.encode("ascii")  # a compact JWT is base64url and dots
            header = jwt.get_unverified_header(raw)
        except (UnicodeEncodeError, jwt.PyJWTError):
            raise InvalidToken(reasons.MALFORMED) from None
        algorithm = header.get("alg")
        if algorithm not in self._algorithms:
            raise InvalidToken(reasons.algorithm_not_allowed(algorithm))
        key = await self._keys.key_for(header.get("kid"))
        if algorithm not in key.algorithms:
            raise InvalidToken(reasons.algorithm_not_allowed(algorithm))
        return self._identity(self._decode(raw, key.key, algorithm))

    def _decode(self, raw: bytes, key: Any, algorithm: str) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                raw,
                key,
                algorithms=[algorithm],
                audience=self._audience,
                issuer=self._issuer,
                leeway=CLOCK_SKEW_LEEWAY_S,
                options={
                    "require": ["exp", "sub"],
                    "verify_aud": self._audience is not None,
                    "enforce_minimum_key_length": True,
                },
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(_reason(exc)) from None
        return claims

    def _identity(self, claims: dict[str, Any]) -> Identity:
        sub = claims["sub"]
        if not isinstance(sub, str) or not sub:
            raise InvalidToken(reasons.BAD_SUB)
        exp = claims["exp"]
        if isinstance(exp, bool) or not isinstance(exp, int | float):
            raise InvalidToken(reasons.BAD_EXP)
        if exp <= self._clock():
            raise InvalidToken(reasons.EXPIRED)
        tenant = claims.get("tenant")
        if tenant is not None and not (
            isinstance(tenant, str) and TENANT_PATTERN.fullmatch(tenant)
        ):
            raise InvalidToken(reasons.BAD_TENANT)
        topics = claims.get("topics")
        if topics is not None and not (
            isinstance(topics, list) and all(isinstance(t, str) and t for t in topics)
        ):
            raise InvalidToken(reasons.BAD_TOPICS)
        return Identity(
            sub=sub,
            tenant=tenant,
            topics=None if topics is None else tuple(topics),
            expires_at_unix_s=float(exp),
        )


def _reason(error: jwt.PyJWTError) -> str:
    """The client-readable reason for one of PyJWT's exceptions (never its message, which
    may quote claim values)."""
    match error:
        case jwt.ExpiredSignatureError():
            return reasons.EXPIRED
        case jwt.ImmatureSignatureError():
            return reasons.NOT_YET_VALID
        case jwt.MissingRequiredClaimError():
            return reasons.missing_claim(error.claim)
        case jwt.InvalidAudienceError():
            return reasons.AUDIENCE_MISMATCH
        case jwt.InvalidIssuerError():
            return reasons.ISSUER_MISMATCH
        case jwt.exceptions.InvalidSubjectError():
            return reasons.BAD_SUB
        case jwt.InvalidIssuedAtError():
            return reasons.BAD_IAT
        case jwt.InvalidSignatureError():
            return reasons.SIGNATURE_FAILED
        case jwt.InvalidAlgorithmError():
            return reasons.algorithm_not_allowed(None)
        case _:
            return reasons.MALFORMED
