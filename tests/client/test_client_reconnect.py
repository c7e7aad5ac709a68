"""The client's connection loop in virtual time, against the in-memory fake broadcaster
(tests/client_fakes.py): planned reconnection after ``server_shutdown``, resubscription,
dead-link detection by the client's own pings, server down and the half-open probe, and
what the caller sees (errors, slow consumption, status watchers, clean close).
"""

from __future__ import annotations

import random
from typing import Any

import pytest
import trio
import trio.testing

from broadcaster.client import (
    ClientStatus,
    ConnectionQuality,
    ConnectionState,
    HeartbeatPolicy,
    ReconnectPolicy,
    open_client,
)
from tests.client_fakes import FakeBroadcaster, fake_broadcaster, update, within_virtual_s

VIRTUAL_DEADLINE_S = 3600

URL = "ws://fake/ws"


def connected(status: ClientStatus) -> bool:
    return status.state is ConnectionState.CONNECTED


def connected_to(number: int) -> Any:
    return lambda s: connected(s) and s.connection_id == f"ws_{number}_1767225600000"


async def pinged(server: FakeBroadcaster, connection: int, count: int = 1) -> None:
    """Wait until connection ``connection`` (1-based) got ``count`` pings."""
    await server.wait_until(
        lambda: (
            len(server.connections) >= connection
            and len(server.connections[connection - 1].messages("ping")) >= count
        )
    )


@within_virtual_s(VIRTUAL_DEADLINE_S)
async def test_server_shutdown_waits_reconnect_after_ms_plus_jitter_not_counted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    policy = ReconnectPolicy()
    twin = random.Random(3)
    statuses: list[ClientStatus] = []
    async with (
        fake_broadcaster() as server,
        open_client(
            URL,
            ["cpu"],
            reconnect=policy,
            rng=random.Random(3),
            connect=server.connect,
            on_status=statuses.append,
        ) as client,
    ):
        await pinged(server, 1)
        shutdown_at = trio.current_time()
        server.up = False  # the restart takes longer than reconnectAfterMs
        await server.connections[0].shutdown(reconnect_after_ms=2000)
        planned = await client.wait_status(lambda s: s.state is ConnectionState.RECONNECTING)
        assert planned.planned
        assert planned.attempt == 0
        assert planned.describe() == "reconnecting (after server_shutdown)"
        assert planned.last_error == "closed with 1001 (GOING_AWAY: server shutting down)"
        # The planned attempt fails: the backoff starts at attempt 1, not 2.
        first = await client.wait_status(lambda s: s.attempt == 1)
        assert first.describe() == "reconnecting (attempt 1/5)"
        server.up = True
        await client.wait_status(connected_to(2))
    planned_wait = 2.0 + twin.uniform(0, 0.5 * 2.0)
    backoff_wait = 5.0 + twin.uniform(0, 0.5 * 5.0)
    print(f"planned reconnection after {server.attempts[1] - shutdown_at:.3f} s")
    assert server.attempts[1] - shutdown_at == pytest.approx(planned_wait, abs=1e-9)
    assert 2.0 <= server.attempts[1] - shutdown_at < 3.0
    assert server.attempts[2] - server.attempts[1] == pytest.approx(backoff_wait, abs=1e-9)
    assert planned.retry_in_s == pytest.approx(planned_wait, abs=1e-9)
    assert not any(s.attempt > 1 for s in statuses)


@within_virtual_s(VIRTUAL_DEADLINE_S)
async def test_resubscribes_its_topics_after_every_welcome(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        fake_broadcaster() as server,
        open_client(URL, ["cpu"], rng=random.Random(4), connect=server.connect) as client,
    ):
        await pinged(server, 1)
        first = server.connections[0]
        # The server's default topics are dropped, ours subscribed.
        assert first.received[:2] == [
            {"type": "unsubscribe", "topics": ["overview", "regressions"]},
            {"type": "subscribe", "topics": ["cpu"]},
        ]
        await client.subscribe(["mem"])
        await client.unsubscribe(["cpu"])
        await server.wait_until(lambda: len(first.received) == 5)
        assert first.received[-2:] == [
            {"type": "subscribe", "topics": ["mem"]},
            {"type": "unsubscribe", "topics": ["cpu"]},
        ]
        assert client.topics == ("mem",)
        for number in (2, 3):
            await server.connections[-1].drop()
            await client.wait_status(connected_to(number))
            await pinged(server, number)
            again = server.connections[number - 1]
            assert again.messages("subscribe") == [{"type": "subscribe", "topics": ["mem"]}]
            # Updates flow again, and only for the topics the client keeps.
            await again.send(update("cpu", 7))
            await again.send(update("mem", number))
            with trio.fail_after(1):
                got = await client.__anext__()
            assert (got.topic, got.seq, got["data"]) == ("mem", number, {"v": number})


@within_virtual_s(VIRTUAL_DEADLINE_S)
async def test_without_topics_follows_the_servers_defaults_after_every_welcome(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with fake_broadcaster() as server:
        server.default_topics = ["overview"]  # as a service started with --default-topics
        async with open_client(URL, rng=random.Random(7), connect=server.connect) as client:
            await pinged(server, 1)
            first = server.connections[0]
            # Nothing to change: the connection is already subscribed to the defaults.
            assert first.messages("subscribe") == first.messages("unsubscribe") == []
            assert client.topics == ("overview",)
            await first.send(update("regressions", 1))  # not followed: ignored
            await first.send(update("overview", 1))
            with trio.fail_after(1):
                got = await client.__anext__()
            assert (got.topic, got.seq) == ("overview", 1)
            await client.subscribe(["cpu"])
            await client.unsubscribe(["overview"])
            # The service now has other defaults: the client follows them, minus what it
            # unsubscribed, plus what it subscribed.
            server.default_topics = ["overview", "mem"]
            await first.drop()
            await client.wait_status(connected_to(2))
            await pinged(server, 2)
            again = server.connections[1]
            assert again.received[:2] == [
                {"type": "unsubscribe", "topics": ["overview"]},
                {"type": "subscribe", "topics": ["cpu"]},
            ]
            assert client.topics == ("mem", "cpu")


@within_virtual_s(VIRTUAL_DEADLINE_S)
async def test_subscribe_while_disconnected_is_sent_after_the_next_welcome(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        fake_broadcaster() as server,
        open_client(URL, [], rng=random.Random(5), connect=server.connect) as client,
    ):
        await pinged(server, 1)
        server.default_topics = []
        server.up = False
        await server.connections[0].drop()
        await client.wait_status(lambda s: s.state is ConnectionState.RECONNECTING)
        await client.subscribe(["cpu", "mem"])
        server.up = True
        await client.wait_status(connected_to(2))
        await pinged(server, 2)
        assert server.connections[1].received[0] == {"type": "subscribe", "topics": ["cpu", "mem"]}
        assert server.connections[0].messages("subscribe") == []


@within_virtual_s(VIRTUAL_DEADLINE_S)
async def test_dead_link_found_by_ping_timeout_then_reconnect(
    autojump_clock: trio.testing.MockClock,
) -> None:
    heartbeat = HeartbeatPolicy(interval_s=30, pong_timeout_s=10)
    twin = random.Random(6)
    async with fake_broadcaster() as server:
        server.pong_delay_s = 0.25
        async with open_client(
            URL, ["cpu"], heartbeat=heartbeat, rng=random.Random(6), connect=server.connect
        ) as client:
            measured = await client.wait_status(lambda s: s.rtt_ms is not None)
            assert measured.rtt_ms == pytest.approx(250.0)
            assert measured.quality is ConnectionQuality.GOOD
            # A healthy link: one ping every 30 s, and no reconnection, for ten minutes.
            await pinged(server, 1, count=21)
            assert trio.current_time() == pytest.approx(600.0)
            assert len(server.attempts) == 1
            # Now the server still holds the connection open but answers nothing.
            server.answer_pings = False
            await pinged(server, 1, count=22)
            silent_since = trio.current_time()
            lost = await client.wait_status(lambda s: s.state is ConnectionState.RECONNECTING)
            assert trio.current_time() - silent_since == pytest.approx(10.0)
            assert lost.last_error == "no pong within 10 s"
            assert lost.rtt_ms is None
            assert lost.quality is None
            server.answer_pings = True
            await client.wait_status(connected_to(2))
    assert server.attempts[1] - silent_since == pytest.approx(
        10.0 + 5.0 + twin.uniform(0, 2.5), abs=1e-9
    )
    assert server.connections[0].closed.is_set()


@within_virtual_s(VIRTUAL_DEADLINE_S)
async def test_server_down_after_max_attempts_then_half_open_probe_brings_it_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    policy = ReconnectPolicy(base_delay_s=1, max_delay_s=4, max_attempts=3, probe_interval_s=60)
    twin = random.Random(11)
    statuses: list[ClientStatus] = []
    async with (
        fake_broadcaster() as server,
        open_client(
            URL,
            ["cpu"],
            reconnect=policy,
            rng=random.Random(11),
            connect=server.connect,
            on_status=statuses.append,
        ) as client,
    ):
        await pinged(server, 1)
        server.up = False
        await server.connections[0].drop()
        lost_at = trio.current_time()
        down = await client.wait_status(lambda s: s.state is ConnectionState.SERVER_DOWN)
        assert down.probes == 0
        # Two probes fail, the third connects.
        await client.wait_status(lambda s: s.probes == 2)
        server.up = True
        back = await client.wait_status(connected_to(2))
        assert (back.attempt, back.probes, back.retry_in_s) == (0, 0, None)
        # The attempt counter was reset: the next loss starts again at attempt 1.
        await pinged(server, 2)
        await server.connections[1].drop()
        again = await client.wait_status(lambda s: s.state is ConnectionState.RECONNECTING)
        assert again.describe() == "reconnecting (attempt 1/3)"
    waits = [expected(k) for k in (1, 2, 3) for expected in [lambda k: _wait(policy, k, twin)]]
    probes = [60 + twin.uniform(0, 30) for _ in range(3)]
    times = [t - lost_at for t in server.attempts[1:]]
    expected_times = [
        waits[0],
        waits[0] + waits[1],
        sum(waits),
        sum(waits) + probes[0],
        sum(waits) + probes[0] + probes[1],
        sum(waits) + sum(probes),
    ]
    print("attempts after the loss at (s):", [round(t, 3) for t in times])
    assert times == pytest.approx(expected_times, abs=1e-9)
    described = [s.describe() for s in statuses]
    assert described[described.index("reconnecting (attempt 1/3)") :][:8] == [
        "reconnecting (attempt 1/3)",
        "reconnecting (attempt 2/3)",
        "reconnecting (attempt 3/3)",
        "server_down",
        "server_down (probing)",
        "server_down",
        "server_down (probing)",
        "server_down",
    ]


def _wait(policy: ReconnectPolicy, attempt: int, twin: random.Random) -> float:
    delay = min(policy.max_delay_s, policy.base_delay_s * 2 ** (attempt - 1))
    return delay + twin.uniform(0, policy.jitter_ratio * delay)


@within_virtual_s(VIRTUAL_DEADLINE_S)
async def test_errors_are_surfaced_and_unknown_messages_ignored(
    autojump_clock: trio.testing.MockClock,
) -> None:
    errors: list[dict[str, Any]] = []
    async with (
        fake_broadcaster() as server,
        open_client(
            URL, ["cpu"], rng=random.Random(12), connect=server.connect, on_error=errors.append
        ) as client,
    ):
        await pinged(server, 1)
        side = server.connections[0]
        error = {
            "type": "error",
            "code": "influxdb_unavailable",
            "message": "InfluxDB query for topic 'cpu' failed",
            "topic": "cpu",
            "cause": "unavailable",
        }
        await side.send(error)
        await side.send({"type": "metrics_delta", "topic": "cpu", "ops": []})
        await side.send({"type": "subscription_confirmed", "topics": ["cpu"]})
        await side.ws.send_message("not json")
        await side.ws.send_message("[1, 2]")
        await side.send({"type": "metrics_update", "topic": "cpu", "seq": "x"})
        await side.send(update("cpu", 3, stale=True))
        with trio.fail_after(1):
            got = await client.__anext__()
        assert (got.topic, got.seq, got.stale) == ("cpu", 3, True)
        assert errors == [error]
        assert len(server.attempts) == 1
        assert client.status.state is ConnectionState.CONNECTED


@within_virtual_s(VIRTUAL_DEADLINE_S)
async def test_slow_caller_gets_the_latest_update_per_topic(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        fake_broadcaster() as server,
        open_client(URL, ["cpu", "mem"], rng=random.Random(13), connect=server.connect) as client,
    ):
        await pinged(server, 1)
        side = server.connections[0]
        for seq in range(1, 51):
            await side.send(update("cpu", seq))
            if seq % 10 == 0:
                await side.send(update("mem", seq))
        await side.send({"type": "ping-marker"})  # unknown: just lets the client catch up
        await trio.testing.wait_all_tasks_blocked()
        # The client kept reading (and answering the heartbeat) while nobody took updates.
        await pinged(server, 1, count=3)
        assert len(server.attempts) == 1
        with trio.fail_after(1):
            got = [await client.__anext__(), await client.__anext__()]
        assert [(u.topic, u.seq) for u in got] == [("cpu", 50), ("mem", 50)]
        assert client.dropped_updates == 49 + 4


@within_virtual_s(VIRTUAL_DEADLINE_S)
async def test_status_watcher_latest_wins_and_ends_on_close(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with fake_broadcaster() as server:
        server.up = False
        async with open_client(
            URL, ["cpu"], rng=random.Random(14), connect=server.connect
        ) as client:
            changes = client.status_changes()
            first = await changes.__anext__()
            assert first.state is ConnectionState.CONNECTING
            # The watcher does not read while the client goes through many states...
            await client.wait_status(lambda s: s.state is ConnectionState.SERVER_DOWN)
            # ...and then gets the newest one, not the backlog.
            latest = await changes.__anext__()
            assert latest == client.status
            assert latest.state is ConnectionState.SERVER_DOWN
        seen = [status async for status in changes]
    assert seen == []
    assert [u async for u in client] == []


@within_virtual_s(VIRTUAL_DEADLINE_S)
async def test_leaving_the_block_closes_with_1000(autojump_clock: trio.testing.MockClock) -> None:
    async with fake_broadcaster() as server:
        async with open_client(URL, ["cpu"], connect=server.connect) as client:
            await pinged(server, 1)
            assert connected(client.status)
        side = server.connections[0]
        await server.wait_until(side.closed.is_set)
        assert side.ws.closed is not None
        assert side.ws.closed.code == 1000


@within_virtual_s(VIRTUAL_DEADLINE_S)
async def test_caller_exception_is_not_wrapped(autojump_clock: trio.testing.MockClock) -> None:
    async with fake_broadcaster() as server:
        with pytest.raises(KeyError):
            async with open_client(URL, ["cpu"], connect=server.connect):
                raise KeyError("mine")


async def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="ws://"):
        async with open_client("http://127.0.0.1/ws"):
            pass
    with pytest.raises(TypeError):
        async with open_client("ws://127.0.0.1/ws", "overview"):
            pass
    with pytest.raises(ValueError, match="topic"):
        async with open_client("ws://127.0.0.1/ws", [""]):
            pass
