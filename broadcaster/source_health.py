"""What the service knows of the metrics database's health, for ``/health`` and the stats."""

from __future__ import annotations

import time
from typing import Any

import trio

from broadcaster.errors import SourceError
from broadcaster.protocol import iso_from_unix_ms
from broadcaster.sources.base import MetricsSource


class SourceHealth:
    """Outcome of the latest query, and an on-demand check while nothing is queried.

    The database is only queried while someone listens, so when the latest outcome is older
    than ``max_age_s``, ``check`` pings the database (``/ping`` is not a query) rather than
    reporting a stale verdict.
    """

    def __init__(self, source: MetricsSource, *, max_age_s: float, ping_timeout_s: float) -> None:
        self._source = source
        self._max_age_s = max_age_s
        self._ping_timeout_s = ping_timeout_s
        self.healthy = True
        self.last_query_unix_ms: int | None = None
        self.last_error: str | None = None
        self.consecutive_failures = 0
        self._checked_at: float | None = None

    def record_success(self) -> None:
        """A query answered."""
        self.healthy = True
        self.consecutive_failures = 0
        self.last_query_unix_ms = int(time.time() * 1000)
        self._checked_at = trio.current_time()

    def record_failure(self, error: str) -> None:
        """A query failed or timed out."""
        self.healthy = False
        self.consecutive_failures += 1
        self.last_error = error
        self.last_query_unix_ms = int(time.time() * 1000)
        self._checked_at = trio.current_time()

    async def check(self) -> None:
        """Refresh the verdict with a ping if no query has told us anything recently."""
        if (
            self._checked_at is not None
            and trio.current_time() - self._checked_at < self._max_age_s
        ):
            return
        try:
            with trio.fail_after(self._ping_timeout_s):
                await self._source.ping()
        except (SourceError, trio.TooSlowError) as exc:
            self.healthy = False
            self.consecutive_failures += 1
            self.last_error = str(exc) or f"ping timed out after {self._ping_timeout_s} s"
        else:
            self.healthy = True
            self.consecutive_failures = 0
        self._checked_at = trio.current_time()

    def report(self) -> dict[str, Any]:
        """The ``influxdb`` part of ``/health``."""
        return {
            "healthy": self.healthy,
            "lastQueryAt": iso_from_unix_ms(self.last_query_unix_ms),
            "lastError": self.last_error,
            "consecutiveFailures": self.consecutive_failures,
        }
