"""A token bucket: how many messages a client may send, on average and in a burst."""

from __future__ import annotations

import trio


class TokenBucket:
    """``rate_per_s`` tokens a second, at most ``burst`` saved up; one token per message.

    Reads ``trio.current_time()``, so it can be tested in virtual time.
    """

    def __init__(self, rate_per_s: float, burst: int) -> None:
        self._rate_per_s = rate_per_s
        self._burst = float(burst)
        self._tokens = float(burst)
        self._updated = trio.current_time()

    def take(self) -> bool:
        """Spend one token if there is one."""
        now = trio.current_time()
        self._tokens = min(self._burst, self._tokens + (now - self._updated) * self._rate_per_s)
        self._updated = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False
