"""``/health`` answers within ``CHECK_WAIT_S`` however the database behaves, with one ping at a
time however many checks arrive.

The verdict's timing is tested in virtual time (MockClock with autojump) with exact times and
ping counts, against a fake source whose pings take as long as the test says. One test runs
the real service over loopback, real clock, against a database that accepts connections and
never answers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import httpx
import trio
import trio.testing

from broadcaster.errors import SourceUnavailable
from broadcaster.service import RunningService, serve
from broadcaster.sources.base import StatementResult
from broadcaster.sources.health import CHECK_WAIT_S, SourceHealth
from tests.services import make_settings
from tests.wsclient import connect, next_message, send_json

TIMEOUT_S = 5.0
MAX_AGE_S = 20.0
OVERDUE = "InfluxDB did not answer a ping within 1000 ms"


@dataclass
class PingSource:
    """Answers each ping after ``delay_s`` (never, if infinite), or fails it with ``error``."""

    delay_s: float = 0.0
    error: str | None = None
    pings: list[float] = field(default_factory=list)

    async def query(self, statements: str) -> list[StatementResult]:
        raise AssertionError("a health check never queries")

    async def ping(self) -> None:
        self.pings.append(trio.current_time())
        await trio.sleep(self.delay_s)
        if self.error is not None:
            raise SourceUnavailable(self.error)


async def started_health(nursery: trio.Nursery, source: PingSource) -> SourceHealth:
    health = SourceHealth(source, max_age_s=MAX_AGE_S, ping_timeout_s=TIMEOUT_S)
    await nursery.start(health.serve_probes)
    return health


async def checks_answered_at(health: SourceHealth, count: int) -> list[float]:
    """Run ``count`` checks at once; when each one returned."""
    answered: list[float] = []

    async def one() -> None:
        await health.check()
        answered.append(trio.current_time())

    async with trio.open_nursery() as checks:
        for _ in range(count):
            checks.start_soon(one)
    return answered


def verdict(
    health: SourceHealth, reason: str | None = None, failures: int = 0, error: str | None = None
) -> None:
    assert health.report() == {
        "healthy": reason is None,
        "reason": reason,
        "lastQueryAt": None,
        "lastError": error,
        "consecutiveFailures": failures,
    }


async def test_fifty_concurrent_checks_share_one_ping(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    source = PingSource(delay_s=0.25)
    health = await started_health(nursery, source)
    start = trio.current_time()

    assert await checks_answered_at(health, 50) == [start + 0.25] * 50
    assert source.pings == [start]
    verdict(health)
    # Fresh now: the next check answers at once, without a ping.
    assert await checks_answered_at(health, 1) == [start + 0.25]
    assert source.pings == [start]


async def test_hanging_ping_is_reported_at_the_bound_and_recorded_at_its_timeout(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    source = PingSource(delay_s=math.inf)
    health = await started_health(nursery, source)
    start = trio.current_time()

    assert await checks_answered_at(health, 50) == [start + CHECK_WAIT_S] * 50
    verdict(health, OVERDUE)
    # While the ping still hangs, a check answers at once with the same verdict.
    await trio.sleep(1.0)
    assert await checks_answered_at(health, 1) == [start + 2.0]
    verdict(health, OVERDUE)
    assert source.pings == [start]

    await trio.sleep_until(start + TIMEOUT_S + 0.5)
    timed_out = "ping timed out after 5000 ms"
    verdict(health, timed_out, failures=1, error=timed_out)
    # The failure is a fresh verdict: no ping for MAX_AGE_S.
    assert await checks_answered_at(health, 1) == [start + TIMEOUT_S + 0.5]
    assert source.pings == [start]

    await trio.sleep_until(start + TIMEOUT_S + MAX_AGE_S)
    assert await checks_answered_at(health, 1) == [start + TIMEOUT_S + MAX_AGE_S + CHECK_WAIT_S]
    assert source.pings == [start, start + TIMEOUT_S + MAX_AGE_S]


async def test_late_answer_is_recorded_when_it_comes(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    source = PingSource(delay_s=3.0)
    health = await started_health(nursery, source)
    start = trio.current_time()

    assert await checks_answered_at(health, 1) == [start + CHECK_WAIT_S]
    verdict(health, OVERDUE)
    await trio.sleep_until(start + 3.5)
    verdict(health)
    assert await checks_answered_at(health, 1) == [start + 3.5]
    assert source.pings == [start]


async def test_failed_ping_answers_at_once(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    refused = "InfluxDB at fake unreachable: connection refused"
    source = PingSource(error=refused)
    health = await started_health(nursery, source)
    start = trio.current_time()

    assert await checks_answered_at(health, 10) == [start] * 10
    verdict(health, refused, failures=1, error=refused)
    assert source.pings == [start]


async def test_recent_query_outcome_needs_no_ping(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    source = PingSource(delay_s=math.inf)
    health = await started_health(nursery, source)
    start = trio.current_time()
    health.record_success()

    assert await checks_answered_at(health, 1) == [start]
    assert source.pings == []
    assert health.report()["healthy"] is True


async def test_query_heard_while_a_ping_is_overdue_decides_the_verdict(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    source = PingSource(delay_s=math.inf)
    health = await started_health(nursery, source)
    await health.check()
    assert health.healthy is False

    health.record_success()
    assert health.healthy is True
    assert health.reason is None


@dataclass
class SilentDatabase:
    """A fake InfluxDB that accepts TCP connections, reads each request and never answers.

    A fake because a real influxd cannot be made to hang: stopped, it refuses connections at
    once. This is the database that is up but stuck, which a health check must not wait for.
    """

    requests: list[bytes] = field(default_factory=list)

    async def handle(self, stream: trio.SocketStream) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = await stream.receive_some(4096)
            if not chunk:
                return
            head += chunk
        self.requests.append(head.split(b"\r\n", 1)[0])
        await trio.sleep_forever()


async def test_health_answers_within_the_bound_while_the_database_hangs(
    nursery: trio.Nursery,
) -> None:
    database = SilentDatabase()
    listeners: list[trio.SocketListener] = await nursery.start(
        partial(trio.serve_tcp, database.handle, 0, host="127.0.0.1")
    )
    port = listeners[0].socket.getsockname()[1]
    settings = make_settings(
        influx_url=f"http://127.0.0.1:{port}",
        query_timeout_ms=3000,
        broadcast_interval_ms=60_000,
        default_topics="",  # nobody listens: only /health reaches the database
    )
    service: RunningService = await nursery.start(partial(serve, settings))
    answers: list[tuple[float, int, dict[str, Any]]] = []
    pong_latencies: list[float] = []

    async with (
        connect(f"ws://127.0.0.1:{service.websocket.port}/ws") as ws,
        httpx.AsyncClient(base_url=service.http_url, timeout=10) as http,
    ):
        await next_message(ws)  # welcome

        async def health_check() -> None:
            started = trio.current_time()
            response = await http.get("/health")
            elapsed = trio.current_time() - started
            answers.append((elapsed, response.status_code, response.json()["services"]["influxdb"]))

        async def ping_pong() -> None:
            started = trio.current_time()
            await send_json(ws, {"type": "ping", "id": len(pong_latencies)})
            pong = await next_message(ws)
            assert (pong["type"], pong["id"]) == ("pong", len(pong_latencies))
            pong_latencies.append(trio.current_time() - started)

        # Poll until the ping's own timeout is recorded; the socket client talks meanwhile.
        with trio.fail_after(20):
            while not answers or not answers[-1][2]["consecutiveFailures"]:
                async with trio.open_nursery() as both:
                    both.start_soon(health_check)
                    both.start_soon(ping_pong)
                await trio.sleep(0.25)
            # Once more after: the recorded failure is answered at once.
            await health_check()

    assert all(elapsed < 1.5 for elapsed, _, _ in answers), answers
    assert all(status == 503 for _, status, _ in answers), answers
    assert answers[0][0] >= CHECK_WAIT_S - 0.01  # the first one waited for the ping
    overdue = [influxdb for _, _, influxdb in answers if influxdb["reason"] == OVERDUE]
    assert len(overdue) >= 3
    assert all(influxdb["consecutiveFailures"] == 0 for influxdb in overdue)
    for _, _, influxdb in answers[-2:]:
        assert influxdb["reason"] == "ping timed out after 3000 ms"
        assert influxdb["consecutiveFailures"] == 1
    assert len(overdue) == len(answers) - 2
    assert database.requests == [b"GET /ping HTTP/1.1"]
    assert max(pong_latencies) < CHECK_WAIT_S
