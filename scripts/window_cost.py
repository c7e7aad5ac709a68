#!/usr/bin/env python3
"""What the 1-hour chart costs per tick: ``latency-history`` incremental vs resending the window.

    uv run scripts/window_cost.py [--ticks 6] [--interval-s 10] [--influx-url URL --influx-db DB]

Without ``--influx-url`` it starts a real influxd in a temporary directory (tests/influxd.py,
as scripts/bench does) and runs the demo generator against it, as a subprocess with its
documented flags: ``scripts/generate_metrics.py --backfill 60 --interval-s 10`` (an hour of
history, then one round of points every 10 s, as the live demo). Then, every ``--interval-s``,
it refreshes the ``latency-history`` channel of the real broadcast loop (the product's code,
with the real InfluxQL source, recording the queries it runs) and reports, per tick:

- bytes per client: the WebSocket frame one subscriber is sent (the frame is encoded once
  and the same bytes go to every subscriber), for the ``metrics_append`` the service sends
  and for the whole window (the ``metrics_update`` a new subscriber gets, which is what every
  subscriber would get each tick if the window were resent);
- InfluxDB points read: the raw ``latency_ms`` points in the time range of the tick's query,
  counted with ``SELECT count(...)`` over the same range, for the tail query the service runs
  and for a whole-window query.

Prints a Markdown table on stdout; progress on stderr. Stops everything it started, by PID.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a file, Python puts scripts/ on sys.path, not the root

from broadcaster.broadcast.loop import BroadcastLoop  # noqa: E402
from broadcaster.broadcast.pop_topics import BUILTIN_TOPICS  # noqa: E402
from broadcaster.channels import Channel  # noqa: E402
from broadcaster.hub import Hub  # noqa: E402
from broadcaster.sources.base import StatementResult  # noqa: E402
from broadcaster.sources.health import SourceHealth  # noqa: E402
from broadcaster.sources.influxql import InfluxQLSource  # noqa: E402
from tests.influxd import Influxd, start_influxd  # noqa: E402

TOPIC = "latency-history"
CHANNEL = Channel(TOPIC, None)
RANGE = re.compile(r"time >= (\d+)ms AND time < (\d+)ms")


def log(text: str) -> None:
    print(f"[window_cost] {text}", file=sys.stderr, flush=True)


class RecordingSource:
    """The real InfluxQL source, keeping the time range of every query it runs."""

    def __init__(self, source: InfluxQLSource) -> None:
        self.source = source
        self.ranges: list[tuple[int, int]] = []

    async def query(self, statements: str) -> list[StatementResult]:
        match = RANGE.search(statements)
        if match is not None:
            self.ranges.append((int(match[1]), int(match[2])))
        return await self.source.query(statements)

    async def ping(self) -> None:
        await self.source.ping()


async def points_in(source: InfluxQLSource, start_ms: int, end_ms: int) -> int:
    """Raw ``latency_ms`` points with a time in [start, end): what a query of that range reads."""
    [result] = await source.query(
        f"SELECT count(latency_ms) FROM pop_metrics WHERE time >= {start_ms}ms"
        f" AND time < {end_ms}ms"
    )
    return sum(int(series.values[0][1]) for series in result.series if series.values)


async def measure(url: str, database: str, ticks: int, interval_s: float) -> list[str]:
    topics = {t.name: t for t in BUILTIN_TOPICS if t.name == TOPIC}
    hub = Hub([TOPIC], [], broadcast_interval_ms=round(interval_s * 1000), max_connections=1)
    async with httpx.AsyncClient(timeout=30) as client:
        source = InfluxQLSource(client, url, database)
        recording = RecordingSource(source)
        health = SourceHealth(recording, max_age_s=60, ping_timeout_s=5)
        loop = BroadcastLoop(
            hub, recording, topics, health, interval_s=interval_s, query_timeout_s=30
        )
        rows = [
            "| tick | message | bytes per client | points read | whole window: bytes | points |",
            "|---:|---|---:|---:|---:|---:|",
        ]
        for tick in range(ticks + 1):
            started = trio.current_time()
            await loop.refresh(CHANNEL)
            state = loop.channels[CHANNEL]
            if state.latest is None or state.window is None:
                raise RuntimeError("the refresh failed; is the database there?")
            sent = state.latest[0]
            whole = loop.snapshot(CHANNEL)
            assert whole is not None
            start, end = recording.ranges[-1]
            read = await points_in(source, start, end)
            whole_start = state.window.spec.start_ms(end)
            whole_read = await points_in(source, whole_start, end)
            kind = "metrics_update" if tick == 0 else "metrics_append"
            rows.append(
                f"| {tick} | {kind} | {len(sent.wire):,} | {read:,} | {len(whole.wire):,}"
                f" | {whole_read:,} |"
            )
            log(rows[-1])
            if tick < ticks:
                await trio.sleep_until(started + interval_s)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ticks", type=int, default=6, help="ticks after the first refresh")
    parser.add_argument("--interval-s", type=float, default=10.0, help="seconds between ticks")
    parser.add_argument("--influx-url", help="an InfluxDB with an hour of demo data already")
    parser.add_argument("--influx-db", default="metrics")
    args = parser.parse_args()
    if args.influx_url:
        rows = trio.run(measure, args.influx_url, args.influx_db, args.ticks, args.interval_s)
        print("\n".join(rows))
        return 0
    with tempfile.TemporaryDirectory(prefix="window-cost-") as scratch:
        influxd = start_influxd(Path(scratch) / "influxd")
        generator: subprocess.Popen[bytes] | None = None
        try:
            generator = start_generator(influxd, args.influx_db, Path(scratch) / "generator.log")
            rows = trio.run(measure, influxd.url, args.influx_db, args.ticks, args.interval_s)
        finally:
            if generator is not None:
                generator.terminate()
                generator.wait(timeout=10)
            influxd.stop()
    print("\n".join(rows))
    return 0


def start_generator(influxd: Influxd, database: str, log_path: Path) -> subprocess.Popen[bytes]:
    """The demo generator, backfilling an hour then writing every 10 s, its log in
    ``log_path``; returns once the backfill is written (its log says so)."""
    command = [
        sys.executable,
        str(ROOT / "scripts" / "generate_metrics.py"),
        "--influx-url",
        influxd.url,
        "--influx-db",
        database,
        "--backfill",
        "60",
        "--interval-s",
        "10",
    ]
    log("starting " + " ".join(command[1:]))
    with log_path.open("wb") as log_file:  # the child keeps its own descriptor
        process = subprocess.Popen(command, stderr=log_file)
    deadline = time.monotonic() + 120
    while "backfilled" not in log_path.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            process.terminate()
            raise RuntimeError(f"the generator did not backfill; see {log_path}")
        time.sleep(0.2)  # polling a child's log: it announces the backfill in no other way
    log(f"backfilled; generator log in {log_path}")
    return process


if __name__ == "__main__":
    sys.exit(main())
