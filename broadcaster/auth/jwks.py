"""Keys from a JSON Web Key Set (``--jwks-url``), fetched with the service's async HTTP client.

The set is fetched on the first token, cached, and fetched again when it is older than
:data:`JWKS_MAX_AGE_S` or when a token names a ``kid`` the cache does not hold (the issuer
rotated its keys). Fetches are serialised by a lock, so a crowd of connections arriving together
causes one fetch, and spaced by :data:`JWKS_REFETCH_COOLDOWN_S`, so tokens with made-up
``kid``\\ s cannot turn the service into a flood against the identity provider.

Outcomes for a token's ``kid``:

- in the cache: its key;
- not in a set fetched for this very question (or just before it): ``InvalidToken`` (4001);
- not in the cache while a fetch is not allowed yet (cooldown) or failed: ``KeysUnavailable``
  (1013, try again later): the key may well exist, and the client should not throw away its
  token because of our cooldown or an outage of the identity provider.

A failed refresh keeps the last good set (logged), so an outage of the identity provider does
not lock out holders of tokens signed with keys already known.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import jwt
import structlog
import trio

from broadcaster.auth import reasons
from broadcaster.auth.identity import InvalidToken, KeysUnavailable
from broadcaster.auth.keys import ASYMMETRIC_ALGORITHMS, VerificationKey, algorithms_for_public_key

log = structlog.get_logger("broadcaster.auth")

# Why 30 s: an issuer that rotates publishes the new key before signing with it, so the first
# token with a new kid finds it with one fetch; a second fetch within 30 s could only help a
# token whose key appeared in those 30 s, while bounding what forged kids can make us send to
# the identity provider to 2 requests a minute.
JWKS_REFETCH_COOLDOWN_S = 30.0
# A key the issuer withdrew stops being accepted within 5 minutes (PyJWKClient's default too).
JWKS_MAX_AGE_S = 300.0
JWKS_FETCH_TIMEOUT_S = 5.0
# Real key sets are a few kilobytes (a handful of keys); anything far larger is not one.
MAX_JWKS_BYTES = 256 * 1024

Keys = Mapping[str | None, VerificationKey]


def parse_jwks(body: bytes) -> dict[str | None, VerificationKey]:
    """The signing keys in a JWKS document, by ``kid`` (None for a key without one).

    Keys that are symmetric (``oct``: a published secret is no secret), for encryption
    (``use: enc``), of a kind or size we do not accept, or that PyJWT cannot parse are skipped.

    Raises:
        KeysUnavailable: not JSON, no ``keys`` list, or no usable key in it.
    """
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise KeysUnavailable("the JWKS is not JSON") from None
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise KeysUnavailable("the JWKS has no 'keys' list")
    keys: dict[str | None, VerificationKey] = {}
    for entry in document["keys"]:
        parsed = _signing_key(entry)
        if parsed is not None:
            kid = entry.get("kid")
            keys[kid] = parsed
    if not keys:
        raise KeysUnavailable("the JWKS holds no usable signing key")
    return keys


def _signing_key(entry: Any) -> VerificationKey | None:
    if not isinstance(entry, dict) or entry.get("kty") == "oct":
        return None
    if entry.get("use", "sig") != "sig" or not isinstance(entry.get("kid", ""), str):
        return None
    try:
        key: Any = jwt.PyJWK(entry).key
    # What PyJWT raises for a malformed member is not one class (its own errors, or the
    # ValueError/TypeError of cryptography and of base64 decoding); any of them skips the key.
    except (jwt.PyJWTError, ValueError, TypeError, KeyError, AttributeError, OverflowError):
        return None
    if hasattr(key, "public_key"):  # a private JWK: we only ever verify
        key = key.public_key()
    algorithms = set(algorithms_for_public_key(key))
    declared = entry.get("alg")
    if declared is not None:
        algorithms &= {declared}
    return VerificationKey(key, frozenset(algorithms)) if algorithms else None


class JwksKeys:
    """The :class:`~broadcaster.auth.keys.KeySource` of ``--jwks-url``.

    Args:
        url: the JWKS address.
        client: the service's HTTP client (its timeouts and TLS settings apply).
        cooldown_s: least time between two fetches.
        max_age_s: age after which the cached set is fetched again.
        clock: seconds, monotonic (Trio's clock by default; tests pass their own).
    """

    def __init__(
        self,
        url: str,
        client: httpx.AsyncClient,
        *,
        cooldown_s: float = JWKS_REFETCH_COOLDOWN_S,
        max_age_s: float = JWKS_MAX_AGE_S,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self._url = url
        self._client = client
        self._cooldown_s = cooldown_s
        self._max_age_s = max_age_s
        self._clock = clock
        self._lock = trio.Lock()
        self._keys: Keys | None = None
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._problem = "the JWKS has not been fetched yet"

    @property
    def fitting_algorithms(self) -> tuple[str, ...]:
        return ASYMMETRIC_ALGORITHMS

    async def key_for(self, kid: str | None) -> VerificationKey:
        fresh = False
        if self._keys is None or self._clock() - (self._fetched_at or 0.0) >= self._max_age_s:
            fresh = await self._refresh_if_allowed()
        if self._keys is None:
            raise KeysUnavailable(self._problem)
        found = _find(self._keys, kid)
        if found is not None:
            return found
        if kid is None:
            raise InvalidToken(reasons.KID_NEEDED)
        if not fresh:
            fresh = await self._refresh_if_allowed()
            found = _find(self._keys, kid)
            if found is not None:
                return found
        if fresh:
            raise InvalidToken(reasons.UNKNOWN_KEY)
        raise KeysUnavailable(f"unknown key id; {self._problem}")

    async def _refresh_if_allowed(self) -> bool:
        """Fetch the set unless the cooldown forbids it. True when the cache is now a set
        fetched at or after this call began (by this call or by the one it waited for)."""
        asked_at = self._clock()
        async with self._lock:
            if self._fetched_at is not None and self._fetched_at >= asked_at:
                return True
            now = self._clock()
            if self._attempted_at is not None and now - self._attempted_at < self._cooldown_s:
                self._problem = "the JWKS was fetched less than the cooldown ago"
                return False
            self._attempted_at = now
            try:
                self._keys = await self._fetch()
            except KeysUnavailable as exc:
                self._problem = str(exc)
                log.warning("key set fetch failed", url=self._url, problem=str(exc))
                return False
            self._fetched_at = self._clock()
            log.info("key set fetched", url=self._url, keys=len(self._keys))
            return True

    async def _fetch(self) -> dict[str | None, VerificationKey]:
        body = bytearray()
        too_large = False
        try:
            with trio.fail_after(JWKS_FETCH_TIMEOUT_S):
                async with self._client.stream("GET", self._url) as response:
                    if response.status_code != 200:
                        raise KeysUnavailable(f"the JWKS answered HTTP {response.status_code}")
                    declared = response.headers.get("content-length", "")
                    too_large = declared.isdigit() and int(declared) > MAX_JWKS_BYTES
                    if not too_large:
                        # Read to the end, keeping at most the bound: leaving httpx's stream
                        # half-read leaks its generators; the deadline bounds the time.
                        async for chunk in response.aiter_bytes():
                            too_large = too_large or len(body) + len(chunk) > MAX_JWKS_BYTES
                            if not too_large:
                                body += chunk
        except trio.TooSlowError:
            raise KeysUnavailable(
                f"the JWKS did not answer within {JWKS_FETCH_TIMEOUT_S:g} s"
            ) from None
        except httpx.HTTPError as exc:
            raise KeysUnavailable(f"the JWKS cannot be fetched: {type(exc).__name__}") from None
        if too_large:
            raise KeysUnavailable(f"the JWKS is over {MAX_JWKS_BYTES} bytes")
        return parse_jwks(bytes(body))


def _find(keys: Keys, kid: str | None) -> VerificationKey | None:
    if kid in keys:
        return keys[kid]
    if kid is None and len(keys) == 1:
        return next(iter(keys.values()))
    return None
