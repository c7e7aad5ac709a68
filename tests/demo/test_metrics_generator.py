"""The metrics generator: the pure simulation, the run loop in virtual time, the real CLI.

The simulation is checked without any clock or database. The run loop gets a virtual clock
(its ``stop.wait`` advances time instead of sleeping) and a fake writer. The CLI is run as a
subprocess against the session's real influxd; it is synchronised on its log lines and exit,
never on sleeps.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from statistics import mean
from typing import Any

import httpx
import pytest

from demo.generator import InfluxWriter, WriteError, batches, run
from demo.simulation import (
    MINUTE_MS,
    POPS,
    REGION_UTC_OFFSET_H,
    Outage,
    Point,
    Regression,
    Simulation,
    daily_factor,
)
from tests import REPO
from tests.influxd import Influxd, free_port

SCRIPT = REPO / "scripts" / "generate_metrics.py"
T0_MS = 1_700_000_000_000 // MINUTE_MS * MINUTE_MS  # 2023-11-14T22:13:00Z
HOUR_MS = 60 * MINUTE_MS


def quiet(**kwargs: Any) -> Simulation:
    """A simulation with no random regressions or outages, only what a test forces."""
    return Simulation(regressions_per_pop_hour=0, outages_per_pop_hour=0, **kwargs)


def times(start_ms: int, minutes: float, interval_ms: int = 10_000) -> range:
    return range(start_ms, start_ms + int(minutes * MINUTE_MS), interval_ms)


def test_fleet_is_at_least_20_pops_over_several_regions() -> None:
    names = [pop.name for pop in POPS]
    regions = {pop.region for pop in POPS}
    points = Simulation(seed=1).round(T0_MS)

    assert len(POPS) >= 20
    assert len(set(names)) == len(names)
    assert len(regions) >= 8
    assert regions <= set(REGION_UTC_OFFSET_H)
    assert [point.pop for point in points] == names
    assert {point.region for point in points} == regions


def test_same_seed_gives_the_same_points_and_another_seed_does_not() -> None:
    def history(seed: int) -> list[Point]:
        return list(Simulation(seed=seed, regressions_per_pop_hour=2).rounds(times(T0_MS, 60)))

    assert history(42) == history(42)
    assert history(42) != history(43)


def test_points_are_plausible() -> None:
    points = list(quiet(seed=5).rounds(times(T0_MS, 30)))
    for point in points:
        assert point.up
        assert point.latency_ms is not None
        assert 10 < point.latency_ms < 120
        assert 0 <= point.packet_loss_pct < 2


def test_random_regressions_start_raise_latency_and_end_by_themselves() -> None:
    simulation = Simulation(seed=9, regressions_per_pop_hour=1, outages_per_pop_hour=0)
    seen: dict[tuple[str, int], Regression] = {}
    in_regression: list[float] = []
    normal: list[float] = []
    for time_ms in times(T0_MS, 6 * 60):
        for point in simulation.round(time_ms):
            active = simulation.active_regressions.get(point.pop)
            assert point.latency_ms is not None
            ratio = point.latency_ms / next(p for p in POPS if p.name == point.pop).base_latency_ms
            ratio /= daily_factor(point.region, time_ms)
            if active is None:
                normal.append(ratio)
            else:
                seen[(active.pop, active.start_ms)] = active
                in_regression.append(ratio / (1 + active.increase))
    ended = [r for r in seen.values() if r.end_ms <= T0_MS + 6 * HOUR_MS]

    assert len(seen) >= 10
    assert len(ended) >= len(seen) - len(POPS)  # only the last one per PoP may still run
    for regression in seen.values():
        assert 3 * MINUTE_MS <= regression.end_ms - regression.start_ms <= 15 * MINUTE_MS
        assert 0.6 <= regression.increase <= 2.0
    # Once the regression factor is taken out, latency is back to its usual level.
    assert mean(normal) == pytest.approx(1.0, abs=0.03)
    assert mean(in_regression) == pytest.approx(1.0, abs=0.03)


def test_forced_regression_applies_only_inside_its_window() -> None:
    start, end = T0_MS + 10 * MINUTE_MS, T0_MS + 20 * MINUTE_MS
    simulation = quiet(seed=3, forced_regressions=[Regression("sin1", start, end, increase=1.0)])
    sin1 = [p for p in simulation.rounds(times(T0_MS, 30)) if p.pop == "sin1"]
    during = [p.latency_ms or 0 for p in sin1 if start <= p.time_ms < end]
    outside = [p.latency_ms or 0 for p in sin1 if not start <= p.time_ms < end]

    assert mean(during) / mean(outside) == pytest.approx(2.0, rel=0.1)
    assert min(during) > max(outside)


def test_outages_write_up_0_and_no_latency_then_recover() -> None:
    start = T0_MS + MINUTE_MS
    simulation = quiet(forced_outages=[Outage("fra1", start, start + 30_000)])
    fra1 = [p for p in simulation.rounds(times(T0_MS, 3)) if p.pop == "fra1"]

    assert [p.up for p in fra1] == [True] * 6 + [False] * 3 + [True] * 9
    down = fra1[6]
    assert (down.latency_ms, down.packet_loss_pct) == (None, 100.0)
    assert down.line() == (
        f"pop_metrics,pop=fra1,region=eu-central packet_loss_pct=100.000,up=0i {start}"
    )


def test_random_outages_are_rare_and_short() -> None:
    simulation = Simulation(seed=2, regressions_per_pop_hour=0, outages_per_pop_hour=0.5)
    points = list(simulation.rounds(times(T0_MS, 6 * 60)))
    down = [p for p in points if not p.up]

    assert 0 < len(down) < len(points) * 0.01
    for pop in POPS:
        flags = [p.up for p in points if p.pop == pop.name]
        runs = "".join("1" if up else "0" for up in flags).split("1")
        assert max(len(run) for run in runs) <= 6


def test_daily_pattern_peaks_in_the_local_evening() -> None:
    midnight = T0_MS // (24 * HOUR_MS) * (24 * HOUR_MS)
    assert daily_factor("eu-west", midnight + 21 * HOUR_MS) == pytest.approx(1.2)
    assert daily_factor("eu-west", midnight + 9 * HOUR_MS) == pytest.approx(0.8)
    assert daily_factor("us-east", midnight + 2 * HOUR_MS) == pytest.approx(1.2)  # 21:00 EST
    assert daily_factor("ap-northeast", midnight + 12 * HOUR_MS) == pytest.approx(1.2)

    simulation = quiet(seed=4)
    peak = list(simulation.rounds(times(midnight + 20 * HOUR_MS + 30 * MINUTE_MS, 60)))
    trough = list(simulation.rounds(times(midnight + 32 * HOUR_MS + 30 * MINUTE_MS, 60)))
    lhr1 = {"peak": peak, "trough": trough}
    means = {k: mean(p.latency_ms or 0 for p in v if p.pop == "lhr1") for k, v in lhr1.items()}
    assert means["peak"] / means["trough"] == pytest.approx(1.5, rel=0.05)


def test_line_protocol_and_batches() -> None:
    point = Point("ams1", "eu-west", T0_MS, 21.5, 0.1, up=True)
    assert point.line() == (
        f"pop_metrics,pop=ams1,region=eu-west latency_ms=21.50,packet_loss_pct=0.100,up=1i {T0_MS}"
    )
    assert [len(b) for b in batches([point] * 12, size=5)] == [5, 5, 2]


class VirtualTime:
    """A clock for :func:`run`: waiting on ``stop`` advances time instead of sleeping."""

    def __init__(self, now_s: float) -> None:
        self.now_s = now_s

    def clock(self) -> float:
        return self.now_s


class VirtualStop(threading.Event):
    def __init__(self, time: VirtualTime) -> None:
        super().__init__()
        self.time = time

    def wait(self, timeout: float | None = None) -> bool:
        self.time.now_s += timeout or 0
        return self.is_set()


class FakeWriter:
    """Records rounds; fails the writes whose number is in ``failing``; stops after ``rounds``."""

    def __init__(self, stop: threading.Event, rounds: int, failing: set[int]) -> None:
        self.stop, self.rounds, self.failing = stop, rounds, failing
        self.written: list[int] = []
        self.attempts = 0

    def create_database(self) -> None:
        raise WriteError("InfluxDB unreachable")

    def write(self, points: Sequence[Point]) -> None:
        self.attempts += 1
        if self.attempts == self.rounds:
            self.stop.set()
        if self.attempts in self.failing:
            raise WriteError("InfluxDB unreachable")
        self.written.append(points[0].time_ms)


def test_run_writes_drift_free_rounds_and_survives_failures(
    caplog: pytest.LogCaptureFixture,
) -> None:
    time = VirtualTime(now_s=T0_MS / 1000 + 3.7)
    stop = VirtualStop(time)
    writer = FakeWriter(stop, rounds=6, failing={2, 3})
    simulation = quiet(interval_ms=10_000)

    with caplog.at_level(logging.INFO, logger="generate_metrics"):
        code = run(writer, simulation, backfill_minutes=0, once=False, stop=stop, clock=time.clock)  # type: ignore[arg-type]

    assert code == 0
    assert writer.written == [T0_MS + k * 10_000 for k in (0, 3, 4, 5)]
    messages = [record.getMessage() for record in caplog.records]
    assert sum("not written" in m for m in messages) == 2  # one line per failed round
    assert sum("accepts writes again" in m for m in messages) == 1
    assert messages[-1] == "stopped"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_creates_the_database_then_writes_history_and_one_round(influxd: Influxd) -> None:
    database = "generator_creates_it"
    try:
        done = run_cli(
            *("--influx-url", influxd.url, "--influx-db", database, "--once", "--backfill", "5")
        )
        answer = influxd.query(
            "SELECT count(up), count(latency_ms) FROM pop_metrics GROUP BY pop, region", database
        )
    finally:
        influxd.query(f'DROP DATABASE "{database}"')

    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    series = answer["results"][0]["series"]  # type: ignore[index]
    assert {(s["tags"]["pop"], s["tags"]["region"]) for s in series} == {
        (pop.name, pop.region) for pop in POPS
    }
    assert {s["values"][0][1] for s in series} == {5 * 6 + 1}  # 30 history rounds + 1 live


def test_writer_recreates_a_database_that_vanished(influxd: Influxd) -> None:
    """As after influxd restarts with empty storage: the write creates the database again."""
    database = "generator_lost_it"
    try:
        with httpx.Client(verify=False) as client:  # loopback HTTP: skip loading the CA bundle
            InfluxWriter(client, influxd.url, database).write(quiet().round(T0_MS))
        answer = influxd.query("SELECT count(up) FROM pop_metrics", database)
    finally:
        influxd.query(f'DROP DATABASE "{database}"')
    assert answer["results"][0]["series"][0]["values"][0][1] == len(POPS)  # type: ignore[index]


def test_cli_once_with_influxdb_down_logs_and_exits_1() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    done = run_cli("--influx-url", url, "--influx-db", "x", "--once")

    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.count("not written") == 1


SIGNAL_EXIT_TIMEOUT_S = 10


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_cli_live_mode_stops_cleanly_on_signal(
    influxd: Influxd, influx_db: str, signum: signal.Signals
) -> None:
    """Every wait is bounded: a generator that hangs fails the test (and is killed by its
    PID) instead of hanging the suite. stderr is read by a thread, because a blocking read
    of a pipe has no timeout."""
    args = ["--influx-url", influxd.url, "--influx-db", influx_db, "--backfill", "1"]
    lines: list[str] = []
    backfilled = threading.Event()
    with subprocess.Popen(
        [sys.executable, str(SCRIPT), *args], cwd=REPO, stderr=subprocess.PIPE, text=True
    ) as process:
        stderr = process.stderr
        assert stderr is not None

        def read_stderr() -> None:
            for line in stderr:
                lines.append(line)
                if "backfilled" in line:
                    backfilled.set()

        reader = threading.Thread(target=read_stderr, daemon=True)
        reader.start()
        try:
            # The signals are blocked before the first line, so this one is never lost.
            if not backfilled.wait(timeout=60):
                pytest.fail(f"no 'backfilled' line within 60 s:\n{''.join(lines)}")
            process.send_signal(signum)
            try:
                code = process.wait(timeout=SIGNAL_EXIT_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pytest.fail(
                    f"the generator did not exit within {SIGNAL_EXIT_TIMEOUT_S} s of "
                    f"{signum.name} (hung):\n{''.join(lines)}"
                )
            reader.join(timeout=10)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
    output = "".join(lines)
    assert code == 0, output
    assert "Traceback" not in output
    assert output.rstrip().endswith("stopped")


STRESS_PROGRAM = """
import os, signal, sys, threading, time
from demo.generator import SignalStop

rounds = int(sys.argv[1])
main = threading.get_ident()
for n in range(rounds):
    stop = SignalStop()
    if n % 2:  # to the main thread, or to the process (every thread blocks the signals)
        send = lambda: (time.sleep(0.0002), signal.pthread_kill(main, signal.SIGTERM))
    else:
        send = lambda: (time.sleep(0.0002), os.kill(os.getpid(), signal.SIGINT))
    sender = threading.Thread(target=send)
    sender.start()
    while not stop.wait(0):  # the generator's loop, as fast as it goes
        pass
    sender.join()
    assert stop.received in (signal.SIGTERM, signal.SIGINT)
print("stopped", rounds, "times")
"""


def test_stop_signal_never_deadlocks_the_wait_loop() -> None:
    """The old stop (a signal handler calling ``threading.Event.set()``) deadlocked when the
    signal came while ``Event.wait()`` held the event's lock: this loop hung it within 100
    rounds every time. A subprocess, so a hang is a timeout and the signals are its own."""
    rounds = 2000
    try:
        done = subprocess.run(
            [sys.executable, "-c", STRESS_PROGRAM, str(rounds)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("a stop signal deadlocked the wait loop (no exit within 60 s)")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"stopped {rounds} times"


def test_signal_stop_takes_a_signal_its_parent_made_it_ignore() -> None:
    """A shell starts a background job with SIGINT ignored; it must still stop the generator
    (the old handler replaced the "ignore"; a blocked signal stays pending even if ignored)."""
    program = (
        "import os, signal\n"
        "from demo.generator import SignalStop\n"
        "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "stop = SignalStop()\n"
        "os.kill(os.getpid(), signal.SIGINT)\n"
        "assert stop.wait(10) is True\n"
        "assert stop.received is signal.SIGINT\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_signal_stop_waits_its_timeout_without_a_signal() -> None:
    program = (
        "import time\n"
        "from demo.generator import SignalStop\n"
        "stop = SignalStop()\n"
        "began = time.monotonic()\n"
        "assert stop.wait(0.2) is False\n"
        "assert time.monotonic() - began >= 0.19\n"
        "assert not stop.is_set() and stop.received is None\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
