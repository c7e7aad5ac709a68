"""Token authentication on the WebSocket connection (``--auth-mode jwt``), end to end.

The whole service runs in-process with real keys made per run (an HS256 secret, RS256 and
ES256 key pairs), real tokens signed with PyJWT, and real WebSocket clients over loopback; the
values come from an in-process source (this is about the socket side, not the database).
Real clock: expiry tests use tokens a couple of seconds from their ``exp`` and bounded waits.
"""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path
from typing import Any, NoReturn

import jwt
import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from broadcaster.auth.tokens import JwtVerifier
from broadcaster.service import RunningService
from tests.jwt_keys import AUDIENCE, ISSUER, SigningKey, claims, hs256_key, public_key
from tests.services import StartService
from tests.wsclient import connect, get_json, next_message, send_json, wait_for

ISO_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
AUTH_FIRST = 'authentication required: send {"type": "auth", "token": ...} first'


@pytest.fixture
def key(scratch: Path) -> SigningKey:
    return hs256_key(scratch)


async def jwt_service(
    start_service: StartService, key: SigningKey, **overrides: Any
) -> RunningService:
    key_option = "jwt_secret_file" if key.algorithm.startswith("HS") else "jwt_public_key_file"
    options: dict[str, Any] = {
        "auth_mode": "jwt",
        key_option: str(key.key_file),
        "jwt_audience": AUDIENCE,
        "jwt_issuer": ISSUER,
        "default_topics": "",  # nothing but what the test asks for
        **overrides,
    }
    return await start_service(**options)


def ws_url(service: RunningService) -> str:
    return f"ws://127.0.0.1:{service.websocket.port}/ws"


async def closed_with(ws: WebSocketConnection, timeout_s: float = 10) -> tuple[int, str]:
    """Read until the server closes; its close code and reason."""
    with trio.fail_after(timeout_s):
        try:
            while True:
                await ws.get_message()
        except ConnectionClosed as closed:
            reason = closed.reason
    assert reason is not None
    return reason.code, reason.reason or ""


async def authenticate(ws: WebSocketConnection, token: str) -> dict[str, Any]:
    await send_json(ws, {"type": "auth", "token": token})
    return await next_message(ws)


async def still_open(ws: WebSocketConnection) -> None:
    """The connection answers a ping (with its id): it is open and served."""
    await send_json(ws, {"type": "ping", "id": "alive?"})
    await wait_for(ws, lambda m: m.get("type") == "pong" and m.get("id") == "alive?")


# --- admitted ------------------------------------------------------------------------------


async def test_token_in_the_handshake_header_gets_welcome_with_identity(
    start_service: StartService, key: SigningKey
) -> None:
    service = await jwt_service(start_service, key)
    token = key.sign(**claims(tenant="acme"))
    headers = [(b"Authorization", f"Bearer {token}".encode())]
    async with connect(ws_url(service), extra_headers=headers) as ws:
        welcome = await next_message(ws)
        assert welcome["type"] == "welcome"
        assert welcome["identity"] == {"sub": "alice", "tenant": "acme"}
        assert ISO_MS.fullmatch(welcome["authExpiresAt"])
        # The status API shows who holds the connection, never the token.
        status_code, status = await get_json(f"{service.http_url}/api/websocket/status")
        assert status_code == 200
        (view,) = status["connections"]
        assert view["identity"] == {"sub": "alice", "tenant": "acme"}
        assert token not in str(status)
        _, config = await get_json(f"{service.http_url}/api/client-config")
        assert config["authRequired"] is True  # the dashboard asks for a token at once


async def test_token_as_first_message_gets_welcome_with_identity(
    start_service: StartService, key: SigningKey
) -> None:
    service = await jwt_service(start_service, key)
    async with connect(ws_url(service)) as ws:
        welcome = await authenticate(ws, key.sign(**claims()))
        assert welcome["type"] == "welcome"
        assert welcome["identity"] == {"sub": "alice", "tenant": None}
        assert ISO_MS.fullmatch(welcome["authExpiresAt"])
        await still_open(ws)
    assert service.hub.counters.auth_failures == 0


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
async def test_public_key_tokens_are_accepted(
    start_service: StartService, scratch: Path, algorithm: str
) -> None:
    key = public_key(scratch, algorithm)
    service = await jwt_service(start_service, key)
    async with connect(ws_url(service)) as ws:
        welcome = await authenticate(ws, key.sign(**claims(sub="bob")))
        assert welcome["identity"] == {"sub": "bob", "tenant": None}


async def test_nothing_is_sent_before_a_valid_token(
    start_service: StartService, key: SigningKey
) -> None:
    service = await jwt_service(start_service, key, auth_timeout_ms=400)
    async with connect(ws_url(service)) as ws:
        # No welcome, no update: the first thing the client hears is the 4001 close.
        code, reason = await closed_with(ws)
    assert (code, reason) == (4001, "no token within 400 ms")


# --- refused -------------------------------------------------------------------------------


def _invalid_tokens(key: SigningKey, scratch: Path) -> dict[str, str]:
    (scratch / "other").mkdir()
    other_secret = hs256_key(scratch / "other")
    return {
        "bad signature": other_secret.sign(**claims()),
        "wrong algorithm": SigningKey("HS384", key.private, key.key_file).sign(**claims()),
        "audience mismatch": key.sign(**{**claims(), "aud": "somebody-else"}),
        "issuer mismatch": key.sign(**{**claims(), "iss": "https://evil.test"}),
        "expired": key.sign(**claims(ttl_s=-60)),
        "missing sub": key.sign(**claims(sub=None)),
        "missing exp": key.sign(**{**claims(), "exp": None}),
        "sub not a string": key.sign(**{**claims(), "sub": 42}),
        "tenant with a quote": key.sign(**claims(tenant="acme' OR '1'='1")),
        "topics not a list": key.sign(**claims(topics="cpu")),
        "garbage": "not.a.jwt",
    }


@pytest.mark.parametrize(
    "kind",
    [
        "bad signature",
        "wrong algorithm",
        "audience mismatch",
        "issuer mismatch",
        "expired",
        "missing sub",
        "missing exp",
        "sub not a string",
        "tenant with a quote",
        "topics not a list",
        "garbage",
    ],
)
async def test_every_invalid_token_closes_4001_with_a_reason(
    start_service: StartService, key: SigningKey, scratch: Path, kind: str
) -> None:
    service = await jwt_service(start_service, key, jwt_algorithms="HS256")
    token = _invalid_tokens(key, scratch)[kind]
    async with connect(ws_url(service)) as ws:
        await send_json(ws, {"type": "auth", "token": token})
        code, reason = await closed_with(ws)
    assert code == 4001
    assert reason, "the reason says what was wrong"
    assert token not in reason
    assert service.hub.counters.auth_failures == 1


async def test_invalid_token_in_the_header_closes_4001(
    start_service: StartService, key: SigningKey
) -> None:
    service = await jwt_service(start_service, key)
    headers = [(b"Authorization", f"Bearer {key.sign(**claims(ttl_s=-60))}".encode())]
    async with connect(ws_url(service), extra_headers=headers) as ws:
        code, _ = await closed_with(ws)
    assert code == 4001


async def test_a_message_before_the_token_closes_4001(
    start_service: StartService, key: SigningKey
) -> None:
    service = await jwt_service(start_service, key)
    async with connect(ws_url(service)) as ws:
        await send_json(ws, {"type": "subscribe", "topics": ["overview"]})
        assert await closed_with(ws) == (4001, AUTH_FIRST)
    assert service.hub.counters.auth_failures == 1


# --- refresh and expiry --------------------------------------------------------------------


async def test_refresh_keeps_the_connection_past_the_first_tokens_expiry(
    start_service: StartService, key: SigningKey
) -> None:
    service = await jwt_service(start_service, key)
    first = claims(ttl_s=2)
    async with connect(ws_url(service)) as ws:
        assert (await authenticate(ws, key.sign(**first)))["type"] == "welcome"
        await send_json(ws, {"type": "auth", "token": key.sign(**claims(ttl_s=600))})
        refreshed = await wait_for(ws, lambda m: m["type"] == "auth_refreshed")
        assert ISO_MS.fullmatch(refreshed["authExpiresAt"])
        await trio.sleep(max(0.0, first["exp"] - time.time()) + 1.0)  # past the first exp
        await still_open(ws)
    assert service.hub.counters.tokens_expired == 0


async def test_refresh_with_another_sub_is_refused_and_the_connection_stays(
    start_service: StartService, key: SigningKey
) -> None:
    service = await jwt_service(start_service, key)
    async with connect(ws_url(service)) as ws:
        await authenticate(ws, key.sign(**claims()))
        await send_json(ws, {"type": "auth", "token": key.sign(**claims(sub="mallory"))})
        error = await wait_for(ws, lambda m: m["type"] == "error")
        assert error["code"] == "invalid_token"
        await send_json(ws, {"type": "auth", "token": "garbage"})
        error = await wait_for(ws, lambda m: m["type"] == "error")
        assert error["code"] == "invalid_token"
        await still_open(ws)
    assert service.hub.counters.auth_failures == 0


async def test_expiry_closes_4005(start_service: StartService, key: SigningKey) -> None:
    service = await jwt_service(start_service, key)
    async with connect(ws_url(service)) as ws:
        await authenticate(ws, key.sign(**claims(ttl_s=2)))
        assert await closed_with(ws, timeout_s=10) == (4005, "token expired")
    assert service.hub.counters.tokens_expired == 1


# --- per-identity cap ----------------------------------------------------------------------


async def test_a_newer_connection_of_the_same_identity_replaces_the_oldest_with_4009(
    start_service: StartService, key: SigningKey
) -> None:
    service = await jwt_service(start_service, key, max_connections_per_identity=2)
    token = key.sign(**claims(tenant="acme"))
    async with (
        connect(ws_url(service)) as oldest,
        connect(ws_url(service)) as second,
        connect(ws_url(service)) as other_sub,
    ):
        await authenticate(oldest, token)
        await authenticate(second, token)
        await authenticate(other_sub, key.sign(**claims(sub="bob", tenant="acme")))
        async with connect(ws_url(service)) as newest:
            assert (await authenticate(newest, token))["type"] == "welcome"
            assert await closed_with(oldest) == (4009, "replaced by a newer connection")
            for ws in (second, other_sub, newest):
                await still_open(ws)
    assert service.hub.counters.connections_replaced == 1


async def test_keys_unavailable_closes_1013_not_4001(
    start_service: StartService, scratch: Path
) -> None:
    with socket.socket() as probe:  # a port nobody listens on: the key set cannot be fetched
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    service = await start_service(
        auth_mode="jwt", jwks_url=f"http://127.0.0.1:{port}/jwks.json", default_topics=""
    )
    key = public_key(scratch, "RS256")
    token = jwt.encode(claims(), key.private, "RS256", headers={"kid": "k1"})
    async with connect(ws_url(service)) as ws:
        await send_json(ws, {"type": "auth", "token": token})
        assert await closed_with(ws) == (1013, "authentication unavailable, try again later")
    assert service.hub.counters.auth_failures == 0


async def test_a_verifier_failure_ends_only_that_connection_with_1011(
    start_service: StartService, key: SigningKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = await jwt_service(start_service, key)

    async def broken(self: JwtVerifier, token: str) -> NoReturn:
        raise RuntimeError("fault injected by the test")

    with monkeypatch.context() as patched:
        patched.setattr(JwtVerifier, "verify", broken)
        async with connect(ws_url(service)) as ws:
            await send_json(ws, {"type": "auth", "token": key.sign(**claims())})
            assert await closed_with(ws) == (1011, "internal error")
    assert service.hub.containment.counts()["handler"] == 1
    async with connect(ws_url(service)) as ws:
        assert (await authenticate(ws, key.sign(**claims())))["type"] == "welcome"
