"""The shipped Python client and ``broadcaster watch`` against the REAL service with
``--auth-mode jwt``: real HS256 tokens signed per run (PyJWT, tests/jwt_keys.py), real
sockets on loopback, TLS with a certificate made per run (trustme, tests/tls_certs.py), and
``broadcaster watch`` as a subprocess.

The service runs in the test's nursery on an in-process source (``start_service``): these
tests are about tokens, not data. Real clock: tokens live a few seconds (``exp`` has whole
seconds), every wait is under ``trio.fail_after``, and the only sleeps are "nothing happens".
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import trio

from broadcaster.client import (
    ClientStatus,
    ClientStopped,
    ConnectionState,
    ReconnectPolicy,
    open_client,
)
from broadcaster.client.watch import EXIT_STOPPED
from broadcaster.service import RunningService
from tests.jwt_keys import SigningKey, hs256_key
from tests.services import StartService
from tests.tls_certs import make_tls_files

SHORT = ReconnectPolicy(base_delay_s=0.2, max_delay_s=0.5, max_attempts=100)
WAIT_S = 30


def connected(status: ClientStatus) -> bool:
    return status.state is ConnectionState.CONNECTED


def token(key: SigningKey, sub: str = "alice", ttl_s: float = 600) -> str:
    return key.sign(sub=sub, exp=int(time.time() + ttl_s))


@pytest.fixture
def key(tmp_path: Path) -> SigningKey:
    return hs256_key(tmp_path)


async def start_jwt_service(
    start_service: StartService, key: SigningKey, **overrides: object
) -> RunningService:
    return await start_service(
        auth_mode="jwt", jwt_secret_file=str(key.key_file), auth_timeout_ms=1000, **overrides
    )


async def test_a_token_in_the_handshake_gets_the_welcome(
    start_service: StartService, key: SigningKey
) -> None:
    service = await start_jwt_service(start_service, key)
    with trio.fail_after(WAIT_S):
        async with (
            open_client(service.websocket.url, token=token(key)) as client,
            httpx.AsyncClient(base_url=service.http_url, timeout=10) as http,
        ):
            up = await client.wait_status(connected)
            response = await http.get("/api/websocket/status")
    assert up.auth_expires_at is not None
    (connection,) = response.json()["connections"]
    assert connection["id"] == up.connection_id
    assert connection["identity"] == {"sub": "alice", "tenant": None}


async def test_a_refresh_keeps_the_connection_past_the_first_tokens_expiry(
    start_service: StartService, key: SigningKey
) -> None:
    service = await start_jwt_service(start_service, key)
    given: list[float] = []

    def provide() -> str:
        given.append(time.time())
        return token(key, ttl_s=3)

    statuses: list[ClientStatus] = []
    with trio.fail_after(WAIT_S):
        async with open_client(
            service.websocket.url, token=provide, reconnect=SHORT, on_status=statuses.append
        ) as client:
            up = await client.wait_status(connected)
            first_expiry = up.auth_expires_at
            assert first_expiry is not None
            # Past the first token's expiry, by more than a refresh period.
            await client.wait_status(
                lambda s: s.auth_expires_at is not None and s.auth_expires_at > first_expiry
            )
            await trio.sleep(4)  # nothing happens: the token is refreshed, never expires
            now = client.status
    assert now.state is ConnectionState.CONNECTED
    assert now.connection_id == up.connection_id  # the same connection all along
    assert now.auth_error is None
    assert len(given) >= 3  # the connection, then a refresh every ~2 s
    assert [s for s in statuses if s.state is not ConnectionState.CONNECTED][1:] == []


async def test_4005_reconnects_with_a_fresh_token_from_the_provider(
    start_service: StartService, key: SigningKey
) -> None:
    """The refresh is refused (the provider's second token names another holder), so the
    first token expires: 4005, and the next connection gets the provider's third token."""
    service = await start_jwt_service(start_service, key)
    tokens = iter([token(key, ttl_s=3), token(key, sub="mallory"), token(key)])
    given: list[str] = []

    def provide() -> str:
        given.append(next(tokens))
        return given[-1]

    errors: list[str] = []
    with trio.fail_after(WAIT_S):
        async with open_client(
            service.websocket.url,
            token=provide,
            reconnect=SHORT,
            on_error=lambda message: errors.append(message["code"]),
            topics=[],  # the in-process source's values are not what this test is about
        ) as client:
            first = await client.wait_status(connected)
            refused = await client.wait_status(lambda s: s.auth_error is not None)
            assert refused.state is ConnectionState.CONNECTED  # kept until it expires
            assert refused.auth_error is not None
            assert refused.auth_error.startswith("invalid_token")
            expired = await client.wait_status(lambda s: s.token_expired)
            assert expired.last_error is not None
            assert "4005" in expired.last_error
            assert expired.retry_in_s is not None
            assert expired.retry_in_s <= 1.0
            back = await client.wait_status(connected)
    assert back.connection_id != first.connection_id
    assert [code for code in errors if code == "invalid_token"] == ["invalid_token"]
    assert len(given) == 3


async def test_an_invalid_token_stops_the_client_without_reconnecting(
    start_service: StartService, key: SigningKey, tmp_path: Path
) -> None:
    service = await start_jwt_service(start_service, key)
    other = tmp_path / "other"
    other.mkdir()
    wrong = hs256_key(other)  # a secret the service does not know
    calls: list[str] = []

    def provide() -> str:
        calls.append(token(wrong))
        return calls[-1]

    statuses: list[ClientStatus] = []
    with trio.fail_after(WAIT_S):
        async with open_client(
            service.websocket.url, token=provide, reconnect=SHORT, on_status=statuses.append
        ) as client:
            with pytest.raises(ClientStopped) as stopped:
                async for _ in client:
                    pass
            await trio.sleep(1)  # nothing happens: 5 reconnection delays go by
    assert stopped.value.code == 4001
    assert "signature" in stopped.value.reason.lower()
    assert [s.state for s in statuses] == [ConnectionState.STOPPED]
    assert len(calls) == 1


async def test_no_token_is_refused_with_4001_and_stops(
    start_service: StartService, key: SigningKey
) -> None:
    service = await start_jwt_service(start_service, key)
    with trio.fail_after(WAIT_S):
        async with open_client(service.websocket.url, reconnect=SHORT) as client:
            stopped = await client.wait_status(lambda s: s.state is ConnectionState.STOPPED)
    assert stopped.last_error is not None
    assert "4001" in stopped.last_error


async def test_4009_stops_the_replaced_client_and_the_newer_one_stays(
    start_service: StartService, key: SigningKey
) -> None:
    service = await start_jwt_service(start_service, key, max_connections_per_identity=1)
    url = service.websocket.url
    with trio.fail_after(WAIT_S):
        async with open_client(url, token=token(key), reconnect=SHORT) as older:
            await older.wait_status(connected)
            async with open_client(url, token=token(key), reconnect=SHORT) as newer:
                await newer.wait_status(connected)
                replaced = await older.wait_status(lambda s: s.state is ConnectionState.STOPPED)
                await trio.sleep(1)  # nothing happens: the older one does not come back
                assert newer.status.state is ConnectionState.CONNECTED
    assert older.stopped is not None
    assert older.stopped.code == 4009
    assert replaced.last_error is not None
    assert "4009" in replaced.last_error


async def test_wss_with_a_private_ca(
    start_service: StartService, key: SigningKey, tmp_path: Path
) -> None:
    tls = make_tls_files(tmp_path)
    service = await start_jwt_service(start_service, key, **tls.flags())
    url = f"wss://127.0.0.1:{service.websocket.port}/ws"
    with trio.fail_after(WAIT_S):
        async with open_client(
            url, token=token(key), ssl_context=tls.client_context, reconnect=SHORT
        ) as client:
            up = await client.wait_status(connected)
        assert up.auth_expires_at is not None
        # Without the CA the certificate is refused: a failed attempt, never a welcome.
        async with open_client(url, token=token(key), reconnect=SHORT) as untrusting:
            failed = await untrusting.wait_status(lambda s: s.state is ConnectionState.RECONNECTING)
    assert failed.last_error is not None
    assert failed.last_error.startswith("TLS handshake failed")
    assert "CERTIFICATE_VERIFY_FAILED" in failed.last_error


# --- broadcaster watch ----------------------------------------------------------------------


async def run_watch(*flags: str) -> trio.Process:
    command = [sys.executable, "-m", "broadcaster", "watch", "--base-delay-ms", "200", *flags]
    return await trio.lowlevel.open_process(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


async def read_until(stream: trio.abc.ReceiveStream, found: Callable[[str], bool]) -> str:
    text = ""
    while not found(text):
        chunk = await stream.receive_some()
        if not chunk:
            raise AssertionError(f"output ended before what was expected:\n{text}")
        text += chunk.decode()
    return text


async def test_watch_with_a_token_file_over_wss(
    start_service: StartService, key: SigningKey, tmp_path: Path
) -> None:
    tls = make_tls_files(tmp_path)
    service = await start_jwt_service(start_service, key, **tls.flags())
    token_file = tmp_path / "token"
    token_file.write_text(token(key) + "\n")
    url = f"wss://127.0.0.1:{service.websocket.port}/ws"
    process = await run_watch("--token-file", str(token_file), "--ca-file", str(tls.ca_file), url)
    try:
        with trio.fail_after(WAIT_S):
            assert process.stdout is not None
            output = await read_until(process.stdout, lambda text: "status  connected" in text)
            process.send_signal(signal.SIGTERM)
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
    assert "status  connecting" in output


async def test_watch_exits_with_the_reason_after_4001(
    start_service: StartService, key: SigningKey, tmp_path: Path
) -> None:
    service = await start_jwt_service(start_service, key)
    token_file = tmp_path / "token"
    token_file.write_text(token(key, ttl_s=-60))  # expired a minute ago
    process = await run_watch("--token-file", str(token_file), service.websocket.url)
    try:
        with trio.fail_after(WAIT_S):
            code = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
    assert process.stderr is not None
    stderr = (await process.stderr.receive_some()).decode()
    assert code == EXIT_STOPPED
    assert "4001" in stderr
    assert "expired" in stderr.lower()
    assert "not reconnecting" in stderr
