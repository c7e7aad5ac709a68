"""The client's tokens in virtual time, against the in-memory fake broadcaster
(tests/client_fakes.py): the handshake header, the provider called on every attempt, the
in-band refresh and its timing, and what each auth close code does (4001 and 4009 stop,
4005 reconnects with a fresh token). The fake checks no signature: the same behaviours
against the real service with real tokens are in test_client_auth_service.py.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.testing

from broadcaster.client import (
    ClientStatus,
    ClientStopped,
    ConnectionState,
    ReconnectPolicy,
    open_client,
)
from broadcaster.client.auth import refresh_delay_s
from tests.client_fakes import FakeBroadcaster, fake_broadcaster, within_virtual_s

URL = "ws://fake/ws"
VIRTUAL_DEADLINE_S = 3600


def connected(status: ClientStatus) -> bool:
    return status.state is ConnectionState.CONNECTED


def counting_provider(prefix: str = "token") -> tuple[Callable[[], str], list[str]]:
    """A provider that returns ``token-1``, ``token-2``, ... and the list of what it gave."""
    given: list[str] = []

    def provide() -> str:
        given.append(f"{prefix}-{len(given) + 1}")
        return given[-1]

    return provide, given


async def connections(server: FakeBroadcaster, count: int) -> None:
    await server.wait_until(lambda: len(server.connections) >= count)


def test_refresh_delay_is_a_share_of_what_is_left() -> None:
    assert refresh_delay_s(3600) == pytest.approx(2880)
    assert refresh_delay_s(5) == pytest.approx(4)
    assert refresh_delay_s(0.5) is None  # too late: wait for 4005


@within_virtual_s(VIRTUAL_DEADLINE_S)
async def test_a_fixed_token_goes_in_the_handshake_header_not_the_url(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        fake_broadcaster() as server,
        open_client(URL, ["cpu"], connect=server.connect, token="the.jwt.value") as client,
    ):
        await client.wait_status(connected)
        (side,) = server.connections
        assert side.headers["authorization"] == "Bearer the.jwt.value"
        assert "the.jwt.value" not in client.url


@within_virtual_s(VIRTUAL_DEADLINE_S)
async def test_no_token_sends_no_authorization_header(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        fake_broadcaster() as server,
        open_client(URL, ["cpu"], connect=server.connect) as client,
    ):
        await client.wait_status(connected)
        assert "authorization" not in server.connections[0].headers


@within_virtual_s(VIRTUAL_DEADLINE_S)
async def test_the_provider_is_asked_again_on_every_reconnection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    given: list[str] = []

    async def provide() -> str:  # an async provider
        await trio.lowlevel.checkpoint()
        given.append(f"token-{len(given) + 1}")
        return given[-1]

    async with (
        fake_broadcaster() as server,
        open_client(URL, ["cpu"], connect=server.connect, token=provide) as client,
    ):
        await client.wait_status(connected)
        await server.connections[0].drop()
        await connections(server, 2)
        await client.wait_status(lambda s: connected(s) and s.connection_id is not None)
        assert [side.bearer for side in server.connections] == ["token-1", "token-2"]
        assert given == ["token-1", "token-2"]


@within_virtual_s(VIRTUAL_DEADLINE_S)
async def test_refreshes_in_band_after_80_percent_of_what_is_left(
    autojump_clock: trio.testing.MockClock,
) -> None:
    provide, given = counting_provider()
    async with fake_broadcaster() as server:
        server.token_lifetime_s = 100.0
        async with open_client(URL, ["cpu"], connect=server.connect, token=provide) as client:
            welcomed = await client.wait_status(connected)
            assert welcomed.auth_expires_at is not None
            start = trio.current_time()
            side = server.connections[0]
            await server.wait_until(lambda: len(side.messages("auth")) >= 2)
            first, second = side.messages("auth")
            assert first == {"type": "auth", "token": "token-2"}
            assert second == {"type": "auth", "token": "token-3"}
            # 80 s after the welcome (0.8 x 100 s), then 80 s after that auth_refreshed.
            elapsed = trio.current_time() - start
            assert elapsed == pytest.approx(160, abs=1)
            assert len(server.connections) == 1  # no reconnection
            assert given == ["token-1", "token-2", "token-3"]
            assert client.status.auth_error is None


@within_virtual_s(VIRTUAL_DEADLINE_S)
async def test_a_refused_refresh_is_reported_and_the_connection_goes_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    provide, _ = counting_provider()
    errors: list[dict[str, Any]] = []
    async with fake_broadcaster() as server:
        server.token_lifetime_s = 100.0
        server.accept_refresh = False
        async with open_client(
            URL, ["cpu"], connect=server.connect, token=provide, on_error=errors.append
        ) as client:
            await client.wait_status(connected)
            start = trio.current_time()
            failed = await client.wait_status(lambda s: s.auth_error is not None)
            assert failed.auth_error == "invalid_token: token expired"
            assert failed.state is ConnectionState.CONNECTED
            assert errors[0]["code"] == "invalid_token"
            side = server.connections[0]
            # Tried again after 0.8 of the 20 s then left: at 96 s.
            await server.wait_until(lambda: len(side.messages("auth")) >= 2)
            assert trio.current_time() - start == pytest.approx(96, abs=1)


@within_virtual_s(VIRTUAL_DEADLINE_S)
async def test_a_fixed_token_is_never_refreshed(autojump_clock: trio.testing.MockClock) -> None:
    async with fake_broadcaster() as server:
        server.token_lifetime_s = 100.0
        async with open_client(URL, ["cpu"], connect=server.connect, token="fixed") as client:
            await client.wait_status(connected)
            await trio.sleep(99)
            assert server.connections[0].messages("auth") == []


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (4001, "invalid token: signature verification failed"),
        (4009, "replaced by a newer connection"),
    ],
)
@within_virtual_s(VIRTUAL_DEADLINE_S)
async def test_4001_and_4009_stop_the_client_with_the_reason(
    autojump_clock: trio.testing.MockClock, code: int, reason: str
) -> None:
    provide, given = counting_provider()
    statuses: list[ClientStatus] = []
    async with (
        fake_broadcaster() as server,
        open_client(
            URL,
            ["cpu"],
            connect=server.connect,
            token=provide,
            reconnect=ReconnectPolicy(base_delay_s=0.1, max_delay_s=0.1),
            on_status=statuses.append,
        ) as client,
    ):
        await client.wait_status(connected)
        await server.connections[0].close(code, reason)
        with pytest.raises(ClientStopped) as stopped:
            async for _ in client:
                pass
        assert (stopped.value.code, stopped.value.reason) == (code, reason)
        assert client.stopped is stopped.value
        assert client.status.state is ConnectionState.STOPPED
        assert str(code) in client.status.describe()
        assert reason in client.status.describe()
        with pytest.raises(ClientStopped):
            await client.wait_status(connected)
        await trio.sleep(600)  # nothing happens: no reconnection, no new token asked for
        assert len(server.attempts) == 1
        assert given == ["token-1"]
        assert statuses[-1].state is ConnectionState.STOPPED


@within_virtual_s(VIRTUAL_DEADLINE_S)
async def test_4001_before_the_welcome_stops_too(autojump_clock: trio.testing.MockClock) -> None:
    """A client without a token against a service that needs one: told once, not forever."""
    async with fake_broadcaster() as server:
        server.require_token = True
        async with open_client(URL, ["cpu"], connect=server.connect) as client:
            status = await client.wait_status(lambda s: s.state is ConnectionState.STOPPED)
            assert status.last_error is not None
            assert status.last_error.endswith("no token)")
            await trio.sleep(600)
            assert len(server.attempts) == 1


@within_virtual_s(VIRTUAL_DEADLINE_S)
async def test_4005_reconnects_soon_with_a_fresh_token(
    autojump_clock: trio.testing.MockClock,
) -> None:
    provide, given = counting_provider()
    async with fake_broadcaster() as server:
        server.token_lifetime_s = 3600.0
        async with open_client(
            URL, ["cpu"], connect=server.connect, token=provide, rng=random.Random(1)
        ) as client:
            await client.wait_status(connected)
            expired_at = trio.current_time()
            await server.connections[0].close(4005, "token expired")
            planned = await client.wait_status(lambda s: s.state is ConnectionState.RECONNECTING)
            assert planned.token_expired
            assert planned.planned
            assert planned.attempt == 0
            assert planned.describe() == "reconnecting (token expired)"
            assert planned.retry_in_s is not None
            assert planned.retry_in_s <= 1.0  # jitter only: uniform(0, 0.5 x 2 s)
            await connections(server, 2)
            assert trio.current_time() - expired_at <= 1.0
            back = await client.wait_status(connected)
            assert not back.token_expired
            assert server.connections[1].bearer == "token-2"
            assert given == ["token-1", "token-2"]


@within_virtual_s(VIRTUAL_DEADLINE_S)
async def test_a_failing_provider_is_a_failed_attempt_retried_with_backoff(
    autojump_clock: trio.testing.MockClock,
) -> None:
    calls: list[float] = []

    def provide() -> str:
        calls.append(trio.current_time())
        if len(calls) == 1:
            raise RuntimeError("identity provider unreachable")
        return "token-ok"

    async with (
        fake_broadcaster() as server,
        open_client(
            URL,
            ["cpu"],
            connect=server.connect,
            token=provide,
            reconnect=ReconnectPolicy(jitter_ratio=0),
        ) as client,
    ):
        failed = await client.wait_status(lambda s: s.state is ConnectionState.RECONNECTING)
        assert failed.last_error is not None
        assert "identity provider unreachable" in failed.last_error
        assert server.attempts == []  # no connection without a token
        await client.wait_status(connected)
        assert calls[1] - calls[0] == pytest.approx(5.0)
        assert server.connections[0].bearer == "token-ok"


async def test_bad_token_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        async with open_client(URL, token=""):
            pass
    with pytest.raises(TypeError, match="string or a callable"):
        async with open_client(URL, token=42):  # type: ignore[arg-type]
            pass
