"""Writes the simulated PoP metrics (:mod:`demo.simulation`) to InfluxDB, so the
broadcaster has live data: history first (``--backfill``), then one round per interval.

A plain synchronous loop, because this is a standalone demo script, not part of the Trio
service. SIGINT and SIGTERM stop it through :class:`SignalStop`, without a signal handler.
"""

from __future__ import annotations

import argparse
import logging
import math
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Protocol

import httpx

from broadcaster.protocol import iso_from_unix_ms
from broadcaster.sources.influx_auth import influx_auth
from demo.simulation import MINUTE_MS, Point, Regression, Simulation

BATCH_POINTS = 5000  # InfluxDB 1.x recommends 5-10k points per write
WRITE_TIMEOUT_S = 5.0

log = logging.getLogger("generate_metrics")

STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})


class Stop(Protocol):
    """What :func:`run` needs to know when to stop (a ``threading.Event`` has the same)."""

    def wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds, less if stopped; whether it is stopped."""
        ...

    def is_set(self) -> bool:
        """Whether it is stopped, without waiting."""
        ...


class SignalStop:
    """A stop requested with SIGINT or SIGTERM, taken synchronously with ``sigtimedwait``.

    Why no signal handler: Python runs a handler in the main thread between two bytecodes,
    wherever the thread is, also inside ``threading.Event.wait()`` while it holds the event's
    lock. The previous handler called ``Event.set()``, which takes that same lock, so a signal
    arriving at that moment deadlocked the generator for good (it hung a test once; a loop of
    ``wait(0)`` with a signal sent from another thread deadlocks within 100 rounds). Here no
    code runs asynchronously at all: the signals are blocked, so they stay pending, and
    :meth:`wait`, which is also the sleep between rounds, takes them.

    Create it in the main thread before any other thread starts: threads inherit the blocked
    mask, so no thread can take the signals and they wait, pending, for ``sigtimedwait``. They
    stay blocked for the rest of the process, which is what a command-line script wants.
    Linux keeps a blocked signal pending even when its action is "ignore" (as a shell sets
    SIGINT for a background job), so that case stops the generator too. Linux only
    (``sigtimedwait``); the demo runs on Debian.
    """

    def __init__(self, signals: Iterable[signal.Signals] = STOP_SIGNALS) -> None:
        self._signals = frozenset(signals)
        self.received: signal.Signals | None = None
        signal.pthread_sigmask(signal.SIG_BLOCK, self._signals)

    def wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds or until a stop signal; whether one has come."""
        if self.received is None:
            info = signal.sigtimedwait(self._signals, max(0.0, timeout))
            if info is not None:
                self.received = signal.Signals(info.si_signo)
        return self.received is not None

    def is_set(self) -> bool:
        """Whether a stop signal has come (taking a pending one), without waiting."""
        return self.wait(0.0)


def batches(points: Iterable[Point], size: int = BATCH_POINTS) -> Iterator[list[Point]]:
    """Points in lists of at most ``size``, to write history in few requests."""
    batch: list[Point] = []
    for point in points:
        batch.append(point)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


class WriteError(Exception):
    """InfluxDB did not accept a write (down, unreachable, or an HTTP error)."""


class InfluxWriter:
    """Writes points to an InfluxDB 1.x ``/write`` endpoint (or the 2.x/3.x v1 API)."""

    def __init__(
        self,
        client: httpx.Client,
        url: str,
        database: str,
        *,
        token: str | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self._client = client
        self._url = url.rstrip("/")
        self._database = database
        self._headers, self._auth = influx_auth(token, username, password)

    def create_database(self) -> None:
        """``CREATE DATABASE``, which is a no-op when it exists.

        Raises:
            WriteError: InfluxDB refused or could not be reached.
        """
        name = self._database.replace("\\", "\\\\").replace('"', '\\"')
        self._post("/query", {"q": f'CREATE DATABASE "{name}"'}, b"")

    def write(self, points: Sequence[Point]) -> None:
        """Write points, creating the database first if InfluxDB says it does not exist
        (it may have been restarted with empty storage).

        Raises:
            WriteError: the points were not written.
        """
        body = "\n".join(point.line() for point in points).encode()
        params = {"db": self._database, "precision": "ms"}
        try:
            self._post("/write", params, body)
        except WriteError as exc:
            if "database not found" not in str(exc):
                raise
            self.create_database()
            self._post("/write", params, body)

    def _post(self, path: str, params: dict[str, str], body: bytes) -> None:
        try:
            response = self._client.post(
                self._url + path,
                params=params,
                content=body,
                headers=self._headers,
                auth=self._auth or httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.HTTPError as exc:
            raise WriteError(
                f"InfluxDB at {self._url} unreachable: {exc or type(exc).__name__}"
            ) from None
        if response.status_code >= 400:
            raise WriteError(
                f"InfluxDB answered HTTP {response.status_code}: {response.text[:200].strip()}"
            )


def run(
    writer: InfluxWriter,
    simulation: Simulation,
    *,
    backfill_minutes: int,
    once: bool,
    stop: Stop,
    clock: Callable[[], float] = time.time,
) -> int:
    """Backfill, then write one round per interval until ``stop`` says so (or once).

    Rounds are due at fixed multiples of the interval from the start, so the schedule does not
    drift; rounds missed while a write hung are skipped rather than written in a burst.
    A failed write is logged (one line) and the loop goes on, so it outlives a database restart.

    Returns:
        The exit code: 0, or 1 when ``once`` and a write failed.
    """
    interval_ms = simulation.interval_ms
    start_ms = int(clock() * 1000) // interval_ms * interval_ms
    try:
        writer.create_database()
    except WriteError as exc:
        log.warning("cannot create database yet (will retry on write): %s", exc)
    history = range(start_ms - backfill_minutes * MINUTE_MS, start_ms, interval_ms)
    backfilled = _backfill(writer, simulation, history, stop) if history else True
    healthy = backfilled
    slot = 0
    while not stop.wait(max(0.0, (start_ms + slot * interval_ms) / 1000 - clock())):
        round_ms = start_ms + slot * interval_ms
        before = simulation.active_regressions
        points = simulation.round(round_ms)
        _log_regression_changes(before, simulation.active_regressions)
        written = _write_round(writer, points, round_ms, recovering=not healthy)
        if once:
            return 0 if backfilled and written else 1
        healthy = written
        elapsed_slots = math.ceil((clock() * 1000 - start_ms) / interval_ms)
        slot = max(slot + 1, elapsed_slots)
    log.info("stopped")
    return 0


def _backfill(writer: InfluxWriter, simulation: Simulation, times_ms: range, stop: Stop) -> bool:
    written = 0
    for batch in batches(simulation.rounds(times_ms)):
        if stop.is_set():
            return True
        try:
            writer.write(batch)
        except WriteError as exc:
            log.warning("backfill batch of %d points not written: %s", len(batch), exc)
            return False
        written += len(batch)
    log.info(
        "backfilled %d points from %s to %s",
        written,
        iso_from_unix_ms(times_ms[0]),
        iso_from_unix_ms(times_ms[-1]),
    )
    return True


def _write_round(
    writer: InfluxWriter, points: list[Point], round_ms: int, *, recovering: bool
) -> bool:
    try:
        writer.write(points)
    except WriteError as exc:
        log.warning("round at %s not written: %s", iso_from_unix_ms(round_ms), exc)
        return False
    if recovering:
        log.info("InfluxDB accepts writes again (round at %s written)", iso_from_unix_ms(round_ms))
    return True


def _log_regression_changes(
    before: Mapping[str, Regression], after: Mapping[str, Regression]
) -> None:
    for pop in sorted(before.keys() - after.keys()):
        log.info("regression on %s ended", pop)
    for pop, regression in sorted(after.items()):
        if pop not in before:
            minutes = (regression.end_ms - regression.start_ms) / MINUTE_MS
            log.info(
                "regression on %s started: latency +%.0f%% for %.1f min",
                pop,
                regression.increase * 100,
                minutes,
            )


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``scripts/generate_metrics.py``."""
    parser = argparse.ArgumentParser(
        prog="generate_metrics.py",
        description="Write realistic PoP metrics (latency, loss, regressions) to InfluxDB.",
    )
    parser.add_argument("--influx-url", required=True, help="InfluxDB base URL")
    parser.add_argument("--influx-db", required=True, help="database (created if missing)")
    parser.add_argument("--once", action="store_true", help="write one round, then exit")
    parser.add_argument(
        "--backfill",
        type=int,
        default=0,
        metavar="MINUTES",
        help="first write this many minutes of history",
    )
    parser.add_argument("--interval-s", type=float, default=10.0, help="seconds between rounds")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same data)")
    parser.add_argument("--influx-token", help="API token (InfluxDB 2.x/3.x)")
    parser.add_argument("--influx-username", help="InfluxDB 1.x user")
    parser.add_argument("--influx-password", help="InfluxDB 1.x password")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, then :func:`run` until SIGINT/SIGTERM.

    Returns:
        The process exit code.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.interval_s < 0.1:
        parser.error(f"--interval-s must be at least 0.1, got {args.interval_s}")
    if args.backfill < 0:
        parser.error(f"--backfill must be >= 0 minutes, got {args.backfill}")
    if bool(args.influx_username) != bool(args.influx_password):
        parser.error("--influx-username and --influx-password go together")
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # it logs every request at INFO

    stop = SignalStop()  # before anything could start a thread
    simulation = Simulation(seed=args.seed, interval_ms=round(args.interval_s * 1000))
    log.info(
        "writing %d PoPs every %g s to %s, database %s",
        len(simulation.pops),
        args.interval_s,
        args.influx_url,
        args.influx_db,
    )
    with httpx.Client(timeout=WRITE_TIMEOUT_S) as client:
        writer = InfluxWriter(
            client,
            args.influx_url,
            args.influx_db,
            token=args.influx_token,
            username=args.influx_username,
            password=args.influx_password,
        )
        return run(writer, simulation, backfill_minutes=args.backfill, once=args.once, stop=stop)
