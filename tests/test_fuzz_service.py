"""Fuzz the real service's two ports while a bystander watches (issue 9).

``python -m broadcaster serve`` runs as a subprocess against the session's influxd, ticking
every 250 ms over a database with data for the ``cpu`` topic. A bystander client subscribed
to ``cpu`` must get every update (``seq`` +1 each time, about one per tick) and stay
connected while ``CASES`` fuzz cases (``tests/fuzz``) hit the WebSocket and HTTP ports,
``CONCURRENCY`` at a time, each on a fresh connection with a deadline. The test fails if the
process exits, the bystander misses an update or is cut off, ``/health`` stops answering, or
open file descriptors leak once every fuzz connection is gone.

Deterministic and bounded: case ``i`` is a pure function of ``(SEED, i)``, every case and
every wait has a deadline, and the budget is fixed: 2000 cases take 10-15 s on a shared
2-core machine, the whole test about 20 s. A crash names the seed, the last case started,
the exit code and the tail of stderr; the cases in flight (or just finished) are then
replayed one at a time, ``REPLAY_COPIES`` connections at once for races, on a fresh process
to name the one that crashes it alone. Every case's outcome, and each crash, is written to
``fuzz-cases.jsonl`` in the test's temporary directory.

Environment overrides for investigating (the defaults are what CI runs): ``FUZZ_SEED``,
``FUZZ_CASES``, and ``FUZZ_MAX_CRASHES`` (default 1: stop at the first crash; more: restart
the service after each crash and go on, to list every crashing case).
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.fuzz import Case, generate_cases
from tests.fuzz.runner import Outcome, run_case
from tests.fuzz.service import ServiceUnderTest, write_points
from tests.fuzz.witnesses import Bystander, HealthProbe
from tests.influxd import Influxd
from tests.wsclient import eventually

SEED = int(os.environ.get("FUZZ_SEED", "20260101"))
CASES = int(os.environ.get("FUZZ_CASES", "2000"))
MAX_CRASHES = int(os.environ.get("FUZZ_MAX_CRASHES", "1"))
CONCURRENCY = 24
INTERVAL_MS = 250
FD_TOLERANCE = 4
FD_SETTLE_TIMEOUT_S = 5.0
SETTLE_S = 1.0
QUIET_TIMEOUT_S = 20.0
SUSPECT_WINDOW_S = 1.0
MAX_SUSPECTS = 64
REPLAY_DEATH_WAIT_S = 0.5
REPLAY_COPIES = 8
REPLAY_HEALTH_TIMEOUT_S = 2.0
EXIT_WAIT_S = 5.0
MIN_UPDATES_PER_TICK = 0.75
WARM_UP_UPDATES = 2

pytestmark = pytest.mark.fuzz


@pytest.fixture
def service(influxd: Influxd, influx_db: str, tmp_path: Path) -> Iterator[ServiceUnderTest]:
    write_points(influxd, influx_db)
    under_test = ServiceUnderTest(influxd, influx_db, tmp_path, interval_ms=INTERVAL_MS)
    under_test.start()
    yield under_test
    under_test.stop()


@dataclass
class Crash:
    """The process exited during a round: what it said, and which cases may have done it."""

    exit_code: int
    stderr_tail: str
    last_started: Case | None
    suspects: list[Case]
    culprit: Case | None = None
    culprit_exit_code: int | None = None
    culprit_stderr_tail: str = ""
    replays: list[str] = field(default_factory=list)

    def describe(self) -> str:
        lines = [f"the service exited with code {self.exit_code}"]
        if self.last_started is not None:
            lines.append(f"last case started: {self.last_started.describe(160)}")
        if self.culprit is not None:
            lines += [
                f"replayed alone ({REPLAY_COPIES} copies at once), this case crashes it "
                f"(exit code {self.culprit_exit_code}):",
                f"  {self.culprit.describe()}",
                f"  rebuild it: tests.fuzz.generate_case({self.culprit.seed}, "
                f"{self.culprit.index})",
                "  its replay's stderr tail:",
                self.culprit_stderr_tail,
            ]
        else:
            lines.append("no suspect crashes it when replayed alone; the suspects were:")
            lines += [f"  {case.describe(120)}" for case in self.suspects]
        lines += [f"replays: {'; '.join(self.replays)}", "stderr tail:", self.stderr_tail]
        return "\n".join(lines)


@dataclass
class FuzzRun:
    """The whole run: what was played, how it ended, and what went wrong."""

    service: ServiceUnderTest
    queue: deque[Case]
    log: list[dict[str, Any]] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    endings: Counter[str] = field(default_factory=Counter)
    slow: list[str] = field(default_factory=list)
    server_errors: list[str] = field(default_factory=list)
    crashes: list[Crash] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    report: list[str] = field(default_factory=list)
    played: int = 0

    async def play(self) -> Crash | None:
        """Play queued cases, ``CONCURRENCY`` at a time, until done or the process exits."""
        started: dict[int, tuple[float, Case]] = {}
        finished: list[tuple[float, Case]] = []
        last: list[Case] = []
        crashed_at: float | None = None

        async def worker() -> None:
            while self.queue and self.service.alive():
                case = self.queue.popleft()
                started[case.index] = (trio.current_time(), case)
                last[:] = [case]
                outcome = await run_case(case, self._port(case))
                del started[case.index]
                if outcome.ended == "refused":  # the process is gone: the watcher will see it
                    self.queue.appendleft(case)
                    return
                finished.append((trio.current_time(), case))
                self._record(case, outcome)

        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                nonlocal crashed_at
                await self.service.exited_within(math.inf)
                crashed_at = trio.current_time()
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch)
            async with trio.open_nursery() as workers:
                for _ in range(CONCURRENCY):
                    workers.start_soon(worker)
            if self.queue:  # a worker was refused: the process is exiting
                with trio.move_on_after(EXIT_WAIT_S):
                    await trio.sleep_forever()  # until the watcher cancels us
            nursery.cancel_scope.cancel()
        if crashed_at is None and self.queue:
            self.problems.append(
                f"connections refused while the process runs (case #{self.queue[0].index})"
            )
        if crashed_at is None:
            return None
        in_flight = [case for _, case in sorted(started.values(), key=lambda item: item[0])]
        recent = [case for end, case in finished if end >= crashed_at - SUSPECT_WINDOW_S]
        exit_code = self.service.exit_code()
        assert exit_code is not None
        return Crash(
            exit_code=exit_code,
            stderr_tail=self.service.stderr_tail(),
            last_started=last[0] if last else None,
            suspects=(in_flight + recent[::-1])[:MAX_SUSPECTS],
        )

    def _port(self, case: Case) -> int:
        return self.service.ws_port if case.port == "ws" else self.service.http_port

    def _record(self, case: Case, outcome: Outcome) -> None:
        self.played += 1
        self.statuses[f"{case.port} {outcome.status}"] += 1
        self.endings[outcome.ended] += 1
        if outcome.ended == "deadline":
            self.slow.append(f"#{case.index} {case.kind} ({case.plan.ending.value})")
        if outcome.status == "HTTP/1.1 500":
            self.server_errors.append(f"#{case.index} {case.kind} ({outcome.status})")
        self.log.append(
            {
                "index": case.index,
                "kind": case.kind,
                "port": case.port,
                "ending": case.plan.ending.value,
                "bytes": len(case.sent_bytes),
                "status": outcome.status,
                "received": outcome.received_bytes,
                "ended": outcome.ended,
                "ms": round(outcome.elapsed_s * 1000, 1),
            }
        )

    async def attribute(self, crash: Crash) -> None:
        """Replay each suspect alone (``REPLAY_COPIES`` connections of it at once, for races)
        on a fresh process; the first that kills it is the culprit.

        Suspects after the culprit go back to the queue (they were never played alone).
        """
        for number, case in enumerate(crash.suspects):
            if not self.service.alive():
                await trio.to_thread.run_sync(self.service.start)
            async with trio.open_nursery() as copies:  # a race needs company to show
                for _ in range(REPLAY_COPIES - 1):
                    copies.start_soon(run_case, case, self._port(case))
                outcome = await run_case(case, self._port(case))
            await self._settle_after_replay()
            alive = "up" if self.service.alive() else f"EXITED {self.service.exit_code()}"
            crash.replays.append(f"#{case.index} {case.kind}: {outcome.status}, {alive}")
            if not self.service.alive():
                crash.culprit = case
                crash.culprit_exit_code = self.service.exit_code()
                crash.culprit_stderr_tail = self.service.stderr_tail(8)
                self.queue.extendleft(reversed(crash.suspects[number + 1 :]))
                return

    async def _settle_after_replay(self) -> None:
        """Return once the process has exited or has answered ``/health`` after the replay.

        A crash can take a while to end a process on a busy machine; a process that answers
        ``/health`` after the replay's connections are closed has survived it (a dying one
        answers nothing), so the next replay cannot inherit this one's crash.
        """
        if await self.service.exited_within(REPLAY_DEATH_WAIT_S):
            return
        if not await HealthProbe(self.service.http_url, timeout_s=REPLAY_HEALTH_TIMEOUT_S).check():
            await self.service.exited_within(EXIT_WAIT_S)

    async def round(self) -> Crash | None:
        """One service lifetime: bystander and health probe on, play, then the end checks."""
        service = self.service
        bystander = Bystander(service.ws_url)
        health = HealthProbe(service.http_url)
        async with trio.open_nursery() as nursery:
            await nursery.start(bystander.run)
            nursery.start_soon(health.run)
            await eventually(
                lambda: len(bystander.seqs) >= WARM_UP_UPDATES or bool(bystander.failures), 30
            )
            fds_before, fd_kinds_before = self._counted_fds()
            start = trio.current_time()
            crash = await self.play()
            end = trio.current_time()
            if crash is None:
                await self._quiet_and_fd_check(fds_before, fd_kinds_before)
                self._bystander_check(bystander, start, end)
            nursery.cancel_scope.cancel()
        if crash is None:
            self.problems += health.failures
            self.report.append(f"health: answers {dict(health.answers)}")
        self.report.append(f"bystander: {bystander.rtt_summary()}")
        return crash

    def _bystander_check(self, bystander: Bystander, start: float, end: float) -> None:
        ticks = (end - start) / (INTERVAL_MS / 1000)
        updates = bystander.updates_between(start, end)
        self.report.append(
            f"bystander: {updates} updates during {end - start:.1f} s of fuzzing "
            f"(~{ticks:.0f} ticks), seqs {bystander.seqs[0]}..{bystander.seqs[-1]}, "
            f"{len(bystander.errors)} error messages"
        )
        self.problems += bystander.failures
        if updates < MIN_UPDATES_PER_TICK * ticks - 2:
            self.problems.append(
                f"bystander got {updates} updates in {end - start:.1f} s, ~{ticks:.0f} ticks"
            )

    async def _quiet_and_fd_check(self, fds_before: int, fd_kinds_before: dict[str, int]) -> None:
        """Wait until only the bystander is tracked, settle, then compare open descriptors."""
        status_url = f"{self.service.http_url}/api/websocket/status"
        tracked = -1
        with trio.move_on_after(QUIET_TIMEOUT_S):
            while True:
                async with httpx.AsyncClient(timeout=5) as client:
                    response = await client.get(status_url, headers={"Connection": "close"})
                tracked = response.json()["summary"]["trackedConnections"]
                if tracked <= 1:
                    break
                await trio.sleep(0.1)
        if tracked > 1:
            self.problems.append(
                f"{tracked - 1} fuzz connections still tracked {QUIET_TIMEOUT_S} s after the end"
            )
        await trio.sleep(SETTLE_S)  # hypercorn and the kernel close the last sockets
        fds_after, kinds_after = self._counted_fds()
        # A few sockets the peer has reset linger in hypercorn for seconds (not more with
        # more cases: +1 after 6000): give them a bounded while before judging.
        with trio.move_on_after(FD_SETTLE_TIMEOUT_S):
            while fds_after > fds_before + 1:
                await trio.sleep(0.2)
                fds_after, kinds_after = self._counted_fds()
        self.report.append(
            f"open fds (without the pool to influxd): {fds_before} before {fd_kinds_before}, "
            f"{fds_after} after {kinds_after}"
        )
        if fds_after > fds_before + FD_TOLERANCE:
            self.problems.append(
                f"file descriptors leak: {fds_before} before ({fd_kinds_before}), "
                f"{fds_after} after ({kinds_after})"
            )

    def _counted_fds(self) -> tuple[int, dict[str, int]]:
        """Open descriptors, leaving out connections to influxd (httpx's bounded pool)."""
        kinds = self.service.fd_kinds()
        return sum(n for kind, n in kinds.items() if kind != "influxdb"), kinds


async def test_fuzz_keeps_the_service_up(
    service: ServiceUnderTest, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = FuzzRun(service, deque(generate_cases(SEED, CASES)))
    started = trio.current_time()
    while True:
        crash = await run.round()
        if crash is None:
            break
        await run.attribute(crash)
        run.crashes.append(crash)
        run.log.append(
            {
                "crash": crash.exit_code,
                "culprit": crash.culprit.index if crash.culprit else None,
                "suspects": [case.index for case in crash.suspects],
            }
        )
        if len(run.crashes) >= MAX_CRASHES or not run.queue:
            break
        await trio.to_thread.run_sync(service.start)
    elapsed = trio.current_time() - started
    log_path = tmp_path / "fuzz-cases.jsonl"
    log_path.write_text("".join(json.dumps(entry) + "\n" for entry in run.log))
    summary = [
        f"fuzz: seed {SEED}, {run.played} of {CASES} cases played in {elapsed:.1f} s, "
        f"concurrency {CONCURRENCY}, {len(run.crashes)} crash(es); case log {log_path}",
        f"answers: {dict(sorted(run.statuses.items()))}",
        f"endings: {dict(sorted(run.endings.items()))}",
        f"cases still open at their deadline: {len(run.slow)} {run.slow[:10]}",
        f"500 answers: {len(run.server_errors)} {run.server_errors[:10]}",
        *run.report,
    ]
    with capsys.disabled():
        print("\n" + "\n".join(summary))
    if run.crashes:
        pytest.fail("\n\n".join(crash.describe() for crash in run.crashes), pytrace=False)
    if run.problems:
        pytest.fail("\n".join(run.problems), pytrace=False)
