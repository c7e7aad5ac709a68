"""The per-client message rate limit, in virtual time."""

from __future__ import annotations

import trio
import trio.testing

from broadcaster.ws.rate_limit import TokenBucket


async def test_burst_then_steady_rate(autojump_clock: trio.testing.MockClock) -> None:
    bucket = TokenBucket(rate_per_s=2, burst=5)
    assert [bucket.take() for _ in range(6)] == [True] * 5 + [False]
    await trio.sleep(0.5)  # one token back
    assert [bucket.take() for _ in range(2)] == [True, False]
    await trio.sleep(60)  # never more than the burst saved up
    assert sum(bucket.take() for _ in range(10)) == 5
