"""Token buckets: how much a client may send, on average and in a burst.

Two ways to use one. Messages are *taken*: a message over the limit is dropped and the
client told (``rate_limited``). Bytes and frames are *spent* and then *repaid*: the reader
may overspend by what one read or one frame brings, then waits until the bucket is out of
debt before it reads or parses more. Waiting leaves the rest in the kernel's buffers, so TCP
slows the sender down: a flood costs the service a bounded amount of work per second, and a
well-behaved client never notices.
"""

from __future__ import annotations

import trio


class TokenBucket:
    """``rate_per_s`` tokens a second, at most ``burst`` saved up.

    Reads ``trio.current_time()``, so it can be tested in virtual time.
    """

    def __init__(self, rate_per_s: float, burst: float) -> None:
        self._rate_per_s = rate_per_s
        self._burst = float(burst)
        self._tokens = float(burst)
        self._updated = trio.current_time()

    def _refill(self) -> None:
        now = trio.current_time()
        self._tokens = min(self._burst, self._tokens + (now - self._updated) * self._rate_per_s)
        self._updated = now

    def take(self) -> bool:
        """Spend one token if there is one."""
        self._refill()
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False

    def spend(self, amount: float) -> None:
        """Spend ``amount`` tokens, going into debt if there are not enough."""
        self._refill()
        self._tokens -= amount

    def debt_s(self) -> float:
        """Seconds until the bucket is out of debt (0 when it is not in debt)."""
        self._refill()
        return max(0.0, -self._tokens / self._rate_per_s)

    async def repay(self) -> None:
        """Wait until the bucket is out of debt; a checkpoint only when there is debt."""
        wait_s = self.debt_s()
        if wait_s > 0:
            await trio.sleep(wait_s)
