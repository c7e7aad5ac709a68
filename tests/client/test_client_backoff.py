"""The client's reconnection schedule: the pure arithmetic, then the real connection loop in
virtual time (``MockClock(autojump_threshold=0)``), against a connector that is refused.

Expected waits are computed here from the formula with a twin of the client's seeded
``random.Random``, so they are exact, not ranges.
"""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing

from broadcaster.client import (
    ClientStatus,
    ConnectionQuality,
    ConnectionState,
    ReconnectPolicy,
    open_client,
    quality_for_rtt,
)
from broadcaster.client.backoff import (
    HeartbeatPolicy,
    backoff_delay_s,
    planned_wait_s,
    reconnect_wait_s,
)
from tests.client_fakes import fake_broadcaster, within_virtual_s

VIRTUAL_DEADLINE_S = 3600


def expected_wait(policy: ReconnectPolicy, attempt: int, twin: random.Random) -> float:
    """The issue's formula, written out independently of broadcaster.client.backoff."""
    delay = min(policy.max_delay_s, policy.base_delay_s * 2 ** (attempt - 1))
    return delay + twin.uniform(0, policy.jitter_ratio * delay)


def test_default_schedule_is_5_10_20_30_30() -> None:
    policy = ReconnectPolicy()
    assert [backoff_delay_s(policy, k) for k in range(1, 8)] == [5, 10, 20, 30, 30, 30, 30]
    assert backoff_delay_s(policy, 10_000) == 30
    short = ReconnectPolicy(base_delay_s=0.2, max_delay_s=1.0)
    assert [backoff_delay_s(short, k) for k in range(1, 6)] == pytest.approx(
        [0.2, 0.4, 0.8, 1.0, 1.0]
    )


def test_jitter_is_within_0_and_ratio_times_delay() -> None:
    policy = ReconnectPolicy()
    rng = random.Random(1)
    for attempt in range(1, 6):
        delay = backoff_delay_s(policy, attempt)
        waits = [reconnect_wait_s(policy, attempt, rng) for _ in range(2000)]
        assert delay <= min(waits) < delay * 1.02
        assert delay * 1.48 < max(waits) <= delay * 1.5
    no_jitter = ReconnectPolicy(jitter_ratio=0)
    assert reconnect_wait_s(no_jitter, 2, rng) == 10


def test_planned_wait_has_a_jitter_floor_so_zero_still_spreads() -> None:
    """``--reconnect-after-ms 0``: without a floor every client would come back at once."""
    policy = ReconnectPolicy()
    rng = random.Random(2)
    for after_s in (0.0, 0.5):
        waits = [planned_wait_s(policy, after_s, rng) for _ in range(2000)]
        assert after_s <= min(waits) < after_s + 0.02
        assert after_s + 0.98 < max(waits) <= after_s + 1.0  # 0.5 * 2 s floor
    # From the floor up, the jitter is a share of reconnectAfterMs, as before.
    waits = [planned_wait_s(policy, 4.0, rng) for _ in range(2000)]
    assert min(waits) >= 4.0
    assert 5.96 < max(waits) <= 6.0
    assert planned_wait_s(ReconnectPolicy(jitter_ratio=0), 0.0, rng) == 0.0


@pytest.mark.parametrize(
    "bad",
    [
        {"base_delay_s": 0},
        {"max_delay_s": 1, "base_delay_s": 2},
        {"jitter_ratio": -0.1},
        {"max_attempts": 0},
        {"probe_interval_s": 0},
    ],
)
def test_policy_rejects_bad_values(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        ReconnectPolicy(**bad)  # type: ignore[arg-type]


def test_heartbeat_policy_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="interval_s"):
        HeartbeatPolicy(interval_s=0)
    with pytest.raises(ValueError, match="pong_timeout_s"):
        HeartbeatPolicy(pong_timeout_s=-1)


@pytest.mark.parametrize(
    ("rtt_ms", "quality"),
    [
        (None, None),
        (0.4, ConnectionQuality.EXCELLENT),
        (100.0, ConnectionQuality.EXCELLENT),
        (100.001, ConnectionQuality.GOOD),
        (300.0, ConnectionQuality.GOOD),
        (300.5, ConnectionQuality.POOR),
        (5000.0, ConnectionQuality.POOR),
    ],
)
def test_quality_thresholds(rtt_ms: float | None, quality: ConnectionQuality | None) -> None:
    assert quality_for_rtt(rtt_ms) == quality
    assert ClientStatus(ConnectionState.CONNECTED, 5, rtt_ms=rtt_ms).quality == quality


def test_status_rendering() -> None:
    assert str(ClientStatus(ConnectionState.RECONNECTING, 5, attempt=2)) == (
        "reconnecting (attempt 2/5)"
    )
    planned = ClientStatus(ConnectionState.RECONNECTING, 5, planned=True)
    assert planned.describe() == "reconnecting (after server_shutdown)"
    assert ClientStatus(ConnectionState.SERVER_DOWN, 5).describe() == "server_down"
    assert ClientStatus(ConnectionState.CONNECTED, 5).describe() == "connected"


@pytest.mark.parametrize(("seed", "jitter_ratio"), [(7, 0.5), (8, 0.0), (9, 1.0)])
@within_virtual_s(VIRTUAL_DEADLINE_S)
async def test_refused_attempts_wait_the_schedule_then_server_down(
    autojump_clock: trio.testing.MockClock, seed: int, jitter_ratio: float
) -> None:
    policy = ReconnectPolicy(jitter_ratio=jitter_ratio)
    twin = random.Random(seed)
    statuses: list[ClientStatus] = []
    async with fake_broadcaster() as server:
        server.up = False
        async with open_client(
            "ws://fake/ws",
            ["cpu"],
            reconnect=policy,
            rng=random.Random(seed),
            connect=server.connect,
            on_status=statuses.append,
        ) as client:
            assert client.status.state is ConnectionState.CONNECTING
            down = await client.wait_status(lambda s: s.state is ConnectionState.SERVER_DOWN)
    # The first attempt at once, then attempts 1..5 each after its wait.
    gaps = [b - a for a, b in zip(server.attempts, server.attempts[1:], strict=False)]
    expected = [expected_wait(policy, k, twin) for k in range(1, 6)]
    print(f"seed {seed} jitter {jitter_ratio}: waits {[round(g, 3) for g in gaps[:5]]}")
    assert server.attempts[0] == 0
    assert gaps[:5] == pytest.approx(expected, abs=1e-9)
    if jitter_ratio == 0:
        assert gaps[:5] == pytest.approx([5, 10, 20, 30, 30])
    counted = [s for s in statuses if s.state is ConnectionState.RECONNECTING]
    assert [s.describe() for s in counted] == [f"reconnecting (attempt {k}/5)" for k in range(1, 6)]
    assert [s.retry_in_s for s in counted] == pytest.approx(expected, abs=1e-9)
    assert down.attempt == 0
    assert down.last_error is not None
    assert "refused" in down.last_error.lower()
    assert len(server.attempts) == 6  # server_down came right after the 5th failed attempt
