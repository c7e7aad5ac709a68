"""The JWKS key source against a real key set served over HTTP by the test.

:class:`JwksServer` is a minimal HTTP/1.1 responder on 127.0.0.1 (port 0) that counts the
requests it answers, so the tests can say exactly how many fetches happened. The cooldown and
the maximum age are measured on a clock the test moves (the fetches are real sockets, which a
virtual Trio clock cannot see).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import trio

from broadcaster.auth import reasons
from broadcaster.auth.identity import InvalidToken, KeysUnavailable
from broadcaster.auth.jwks import (
    JWKS_MAX_AGE_S,
    JWKS_REFETCH_COOLDOWN_S,
    MAX_JWKS_BYTES,
    JwksKeys,
    parse_jwks,
)
from broadcaster.auth.keys import ASYMMETRIC_ALGORITHMS
from broadcaster.auth.startup import build_verifier
from broadcaster.auth.tokens import JwtVerifier
from broadcaster.config import build_settings
from tests.auth.signing import jwk, new_ec, new_ed25519, new_rsa, new_secret, sign

DEADLINE_S = 10
KEY_1, KEY_2 = new_rsa(), new_ec()


class JwksServer:
    """Answers every request with ``status`` and ``body``; ``requests`` counts them."""

    def __init__(self) -> None:
        self.status = 200
        self.body = b""
        self.requests = 0
        self.url = ""
        self.chunks: list[bytes] | None = None  # when set: sent chunked instead of body

    def serve_keys(self, *keys: dict[str, Any]) -> None:
        self.status, self.body = 200, json.dumps({"keys": list(keys)}).encode()

    async def handle(self, stream: trio.SocketStream) -> None:
        # A client may hang up without reading the whole answer (the bound on its size).
        with contextlib.suppress(trio.BrokenResourceError):
            await self._answer(stream)

    async def _answer(self, stream: trio.SocketStream) -> None:
        async with stream:
            request = b""
            with trio.move_on_after(DEADLINE_S):
                while b"\r\n\r\n" not in request:
                    chunk = await stream.receive_some(4096)
                    if not chunk:
                        return
                    request += chunk
                self.requests += 1
                if self.chunks is not None:
                    await stream.send_all(
                        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                        b"Connection: close\r\n\r\n"
                    )
                    for chunk in self.chunks:
                        await stream.send_all(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    await stream.send_all(b"0\r\n\r\n")
                    return
                head = (
                    f"HTTP/1.1 {self.status} X\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(self.body)}\r\nConnection: close\r\n\r\n"
                )
                await stream.send_all(head.encode() + self.body)


class Clock:
    """Seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def server(nursery: trio.Nursery) -> JwksServer:
    jwks = JwksServer()
    listeners = await nursery.start(trio.serve_tcp, jwks.handle, 0)
    port = listeners[0].socket.getsockname()[1]
    jwks.url = f"http://127.0.0.1:{port}/.well-known/jwks.json"
    jwks.serve_keys(jwk(KEY_1, "k1"))
    return jwks


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as http:
        yield http


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def verifier(server: JwksServer, client: httpx.AsyncClient, clock: Clock) -> JwtVerifier:
    return JwtVerifier(JwksKeys(server.url, client, clock=clock), ASYMMETRIC_ALGORITHMS)


async def verify(verifier: JwtVerifier, token: str) -> str:
    with trio.fail_after(DEADLINE_S):
        return (await verifier.verify(token)).sub


async def test_the_key_set_is_fetched_once_and_cached(
    verifier: JwtVerifier, server: JwksServer, clock: Clock
) -> None:
    for _ in range(3):
        assert await verify(verifier, sign(KEY_1, "RS256", kid="k1")) == "alice"
        clock.now += JWKS_MAX_AGE_S / 4
    assert server.requests == 1


async def test_a_crowd_on_a_cold_cache_causes_one_fetch(
    verifier: JwtVerifier, server: JwksServer
) -> None:
    token = sign(KEY_1, "RS256", kid="k1")
    subs: list[str] = []

    async def one() -> None:
        subs.append(await verify(verifier, token))

    async with trio.open_nursery() as crowd:
        for _ in range(20):
            crowd.start_soon(one)
    assert subs == ["alice"] * 20
    assert server.requests == 1


async def test_a_rotated_key_is_found_by_refetching_for_its_unknown_kid(
    verifier: JwtVerifier, server: JwksServer, clock: Clock
) -> None:
    assert await verify(verifier, sign(KEY_1, "RS256", kid="k1")) == "alice"
    server.serve_keys(jwk(KEY_1, "k1"), jwk(KEY_2, "k2"))
    clock.now += JWKS_REFETCH_COOLDOWN_S
    assert await verify(verifier, sign(KEY_2, "ES256", kid="k2", sub="bob")) == "bob"
    assert server.requests == 2
    assert await verify(verifier, sign(KEY_1, "RS256", kid="k1")) == "alice"
    assert server.requests == 2


async def test_unknown_kids_refetch_at_most_once_per_cooldown(
    verifier: JwtVerifier, server: JwksServer, clock: Clock
) -> None:
    assert await verify(verifier, sign(KEY_1, "RS256", kid="k1")) == "alice"
    server.serve_keys(jwk(KEY_1, "k1"), jwk(KEY_2, "k2"))
    new_kid = sign(KEY_2, "ES256", kid="k2")
    # Within the cooldown: no fetch, and not the client's fault (its key may well exist).
    clock.now += JWKS_REFETCH_COOLDOWN_S - 1
    for _ in range(5):
        with pytest.raises(KeysUnavailable):
            await verify(verifier, new_kid)
    assert server.requests == 1
    clock.now += 1
    assert await verify(verifier, new_kid) == "alice"
    assert server.requests == 2
    # A kid that the set fetched just now does not hold is the token's fault: 4001, no fetch.
    forged = sign(new_rsa(), "RS256", kid="forged")
    with pytest.raises(InvalidToken, match=reasons.UNKNOWN_KEY):
        await verify(verifier, forged)
    assert server.requests == 2
    clock.now += JWKS_REFETCH_COOLDOWN_S
    with pytest.raises(InvalidToken, match=reasons.UNKNOWN_KEY):
        await verify(verifier, forged)
    assert server.requests == 3


async def test_a_withdrawn_key_is_refused_once_the_set_is_older_than_its_max_age(
    verifier: JwtVerifier, server: JwksServer, clock: Clock
) -> None:
    token = sign(KEY_1, "RS256", kid="k1")
    assert await verify(verifier, token) == "alice"
    server.serve_keys(jwk(KEY_2, "k2"))
    clock.now += JWKS_MAX_AGE_S
    with pytest.raises(InvalidToken, match=reasons.UNKNOWN_KEY):
        await verify(verifier, token)
    assert server.requests == 2


async def test_an_outage_keeps_the_last_good_keys(
    verifier: JwtVerifier, server: JwksServer, clock: Clock
) -> None:
    token = sign(KEY_1, "RS256", kid="k1")
    assert await verify(verifier, token) == "alice"
    server.status, server.body = 503, b"down"
    clock.now += JWKS_MAX_AGE_S
    assert await verify(verifier, token) == "alice"
    assert server.requests == 2
    with pytest.raises(KeysUnavailable):
        await verify(verifier, sign(KEY_2, "ES256", kid="k2"))


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (503, b'{"keys": []}'),
        (200, b"<html>not json</html>"),
        (200, b'{"no": "keys"}'),
        (200, b'{"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "k1"}]}'),
        (200, b'{"keys": [' + b" " * MAX_JWKS_BYTES + b"]}"),
    ],
    ids=["http-error", "not-json", "no-keys-list", "only-a-secret", "too-large-declared"],
)
async def test_an_unusable_endpoint_makes_keys_unavailable_not_the_token_invalid(
    verifier: JwtVerifier, server: JwksServer, status: int, body: bytes
) -> None:
    server.status, server.body = status, body
    with pytest.raises(KeysUnavailable):
        await verify(verifier, sign(KEY_1, "RS256", kid="k1"))


async def test_a_chunked_body_over_the_bound_is_refused(
    verifier: JwtVerifier, server: JwksServer
) -> None:
    chunk = b" " * 65536
    count = MAX_JWKS_BYTES // len(chunk) + 2
    server.chunks = [b'{"keys": ['] + [chunk] * count + [b"]}"]
    with pytest.raises(KeysUnavailable, match="over"):
        await verify(verifier, sign(KEY_1, "RS256", kid="k1"))


async def test_an_endpoint_that_is_down_makes_keys_unavailable(
    client: httpx.AsyncClient, clock: Clock
) -> None:
    with trio.socket.socket() as probe:  # a port nobody listens on
        await probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    keys = JwksKeys(f"http://127.0.0.1:{port}/jwks", client, clock=clock)
    with pytest.raises(KeysUnavailable, match="ConnectError"):
        await verify(JwtVerifier(keys, ASYMMETRIC_ALGORITHMS), sign(KEY_1, "RS256", kid="k1"))


async def test_a_token_without_kid_uses_the_only_key_and_needs_one_among_several(
    verifier: JwtVerifier, server: JwksServer, clock: Clock
) -> None:
    assert await verify(verifier, sign(KEY_1, "RS256")) == "alice"
    server.serve_keys(jwk(KEY_1, "k1"), jwk(KEY_2, "k2"))
    clock.now += JWKS_MAX_AGE_S
    with pytest.raises(InvalidToken, match=reasons.KID_NEEDED):
        await verify(verifier, sign(KEY_1, "RS256"))


async def test_a_declared_alg_binds_the_key_and_confusion_is_refused(
    verifier: JwtVerifier, server: JwksServer
) -> None:
    server.serve_keys(jwk(KEY_1, "k1", alg="RS256"))
    assert await verify(verifier, sign(KEY_1, "RS256", kid="k1")) == "alice"
    with pytest.raises(InvalidToken, match="algorithm RS512 not allowed"):
        await verify(verifier, sign(KEY_1, "RS512", kid="k1"))
    with pytest.raises(InvalidToken, match="algorithm HS256 not allowed"):
        await verify(verifier, sign(new_secret(), "HS256", kid="k1"))


def test_parse_jwks_keeps_only_usable_signing_keys() -> None:
    ed = new_ed25519()
    body = json.dumps(
        {
            "keys": [
                jwk(KEY_1, "rsa"),
                jwk(KEY_2, "ec", alg="ES256"),
                jwk(ed, "ed"),
                jwk(new_rsa(), "enc", use="enc"),
                jwk(new_rsa(), "mismatch", alg="ES256"),
                {"kty": "oct", "k": "c2VjcmV0", "kid": "secret"},
                {"kty": "RSA", "kid": "broken", "n": "!!", "e": 3},
                {"kty": "nope", "kid": "unknown"},
                "not an object",
            ]
        }
    ).encode()
    keys = parse_jwks(body)
    assert sorted(k for k in keys if k) == ["ec", "ed", "rsa"]
    assert keys["ec"].algorithms == {"ES256"}
    assert keys["ed"].algorithms == {"EdDSA"}


async def test_build_verifier_uses_the_jwks_url(
    server: JwksServer, client: httpx.AsyncClient
) -> None:
    settings = build_settings({"auth_mode": "jwt", "jwks_url": server.url})
    verifier = build_verifier(settings, client)
    assert verifier is not None
    assert await verify(verifier, sign(KEY_1, "PS256", kid="k1")) == "alice"  # type: ignore[arg-type]
