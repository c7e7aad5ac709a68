"""What the service knows of the metrics database's health, for ``/health``, the metrics and the
stats line, and the one task that pings the database when nothing else has lately.

The database is only queried while someone listens, so a check that finds the latest outcome
older than ``max_age_s`` asks for a ping (``/ping`` is not a query). A load balancer must get
its answer quickly even while the database hangs, so the check never pings itself::

    check() ── verdict fresh? ── yes ──────────────────────────────────────► return
                   │ no
                   ▼
              ping in flight? ── no ──► request one ──► serve_probes: ping (full timeout),
                   │ yes                                record the outcome, wake the checks
                   ▼
              wait for it, at most CHECK_WAIT_S after it started ───────────► return

However many checks arrive, one ping is in flight at a time and they all share its outcome. A
ping unanswered for ``CHECK_WAIT_S`` makes the verdict unhealthy at once, with a reason that
says so; the ping itself runs on to its full timeout and its outcome is recorded when it comes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
import trio

from broadcaster.errors import SourceError
from broadcaster.protocol import iso_from_unix_ms
from broadcaster.sources.base import MetricsSource

log = structlog.get_logger("broadcaster.sources.health")

CHECK_WAIT_S = 1.0
"""The longest a check waits for a ping: well under load balancers' health-check timeouts
(commonly 2-5 s), and long enough for a database that is merely busy to answer."""


@dataclass(eq=False)
class _Probe:
    """One ping, shared by every check that wants a fresh verdict while it runs."""

    started_at: float
    done: trio.Event = field(default_factory=trio.Event)


class SourceHealth:
    """The verdict on the database: the latest query or ping outcome, or an overdue ping.

    ``check`` only waits; the pings are sent by ``serve_probes``, which must run (the service
    starts it in its nursery) for stale verdicts to be refreshed.
    """

    def __init__(self, source: MetricsSource, *, max_age_s: float, ping_timeout_s: float) -> None:
        self._source = source
        self._max_age_s = max_age_s
        self._ping_timeout_s = ping_timeout_s
        self._healthy = True
        self.last_query_unix_ms: int | None = None
        self.last_error: str | None = None
        self.consecutive_failures = 0
        self._checked_at: float | None = None
        self._probe: _Probe | None = None
        # One slot is enough: a probe is only requested while none is in flight.
        self._probe_requests, self._probe_inbox = trio.open_memory_channel[_Probe](1)
        # Told every outcome, query or ping: the error (None: success) and the failures in a
        # row so far (the notifications' DatabaseWatcher). Must not block.
        self.on_outcome: Callable[[str | None, int], None] = lambda error, failures: None

    @property
    def healthy(self) -> bool:
        """False if the latest outcome was a failure, or a ping has been unanswered too long."""
        return self._healthy and not self._probe_overdue()

    @property
    def reason(self) -> str | None:
        """Why the verdict is unhealthy; None while it is healthy."""
        if self._probe_overdue():
            return f"InfluxDB did not answer a ping within {round(CHECK_WAIT_S * 1000)} ms"
        return None if self._healthy else self.last_error

    def record_success(self) -> None:
        """A query answered."""
        self.last_query_unix_ms = int(time.time() * 1000)
        self._record(None)

    def record_failure(self, error: str) -> None:
        """A query failed or timed out."""
        self.last_query_unix_ms = int(time.time() * 1000)
        self._record(error)

    async def check(self) -> None:
        """Bring the verdict up to date, waiting at most ``CHECK_WAIT_S``.

        Returns at once while the verdict is fresh, or while a ping is already overdue.
        """
        now = trio.current_time()
        if self._checked_at is not None and now - self._checked_at < self._max_age_s:
            return
        probe = self._probe
        if probe is None:
            probe = self._probe = _Probe(now)
            self._probe_requests.send_nowait(probe)
        with trio.move_on_at(probe.started_at + CHECK_WAIT_S):
            await probe.done.wait()

    async def serve_probes(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Ping the database each time a check asks, one ping at a time; runs until cancelled.

        Each ping has the full ``ping_timeout_s``, however long the checks wait for it.
        """
        task_status.started()
        async for probe in self._probe_inbox:
            try:
                await self._ping()
            finally:
                self._probe = None
                probe.done.set()

    def report(self) -> dict[str, Any]:
        """The ``influxdb`` part of ``/health``."""
        return {
            "healthy": self.healthy,
            "reason": self.reason,
            "lastQueryAt": iso_from_unix_ms(self.last_query_unix_ms),
            "lastError": self.last_error,
            "consecutiveFailures": self.consecutive_failures,
        }

    async def _ping(self) -> None:
        error: str | None = None
        with trio.move_on_after(self._ping_timeout_s) as deadline:
            try:
                await self._source.ping()
            except SourceError as exc:
                error = str(exc) or type(exc).__name__
        if deadline.cancelled_caught:
            error = f"ping timed out after {round(self._ping_timeout_s * 1000)} ms"
        if error is not None:
            log.warning("InfluxDB ping failed", error=error)
        self._record(error)

    def _record(self, error: str | None) -> None:
        if error is None:
            self._healthy = True
            self.consecutive_failures = 0
        else:
            self._healthy = False
            self.consecutive_failures += 1
            self.last_error = error
        self._checked_at = trio.current_time()
        self.on_outcome(error, self.consecutive_failures)

    def _probe_overdue(self) -> bool:
        """A ping has been unanswered for ``CHECK_WAIT_S``, and nothing was heard since it began."""
        probe = self._probe
        if probe is None:
            return False
        if self._checked_at is not None and self._checked_at >= probe.started_at:
            return False
        return trio.current_time() - probe.started_at >= CHECK_WAIT_S
