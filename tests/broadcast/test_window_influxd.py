"""The built-in window topic ``latency-history`` against a real influxd, without sockets: the
broadcast loop's refreshes on the in-memory hub, its InfluxQL source pointed at an hour of
points in the test's database.

The source is the real one, wrapped only to record the queries it is asked to run.
"""

from __future__ import annotations

import re
import time
from typing import Any

import httpx

from broadcaster.broadcast.loop import BroadcastLoop
from broadcaster.broadcast.pop_topics import BUILTIN_TOPICS
from broadcaster.client.window import apply_append
from broadcaster.sources.base import StatementResult
from broadcaster.sources.health import SourceHealth
from broadcaster.sources.influxql import InfluxQLSource
from tests.fakes import make_hub, open_connection, sent_messages
from tests.influxd import Influxd

TOPICS = {topic.name: topic for topic in BUILTIN_TOPICS if topic.name == "latency-history"}
STEP_MS = 10_000
RANGE = re.compile(r"time >= (\d+)ms AND time < (\d+)ms")


class RecordingSource:
    """The real source, recording what it is asked to query."""

    def __init__(self, source: InfluxQLSource) -> None:
        self.source = source
        self.queries: list[str] = []

    async def query(self, statements: str) -> list[StatementResult]:
        self.queries.append(statements)
        return await self.source.query(statements)

    async def ping(self) -> None:
        await self.source.ping()

    def range_ms(self, index: int) -> tuple[int, int]:
        match = RANGE.search(self.queries[index])
        assert match is not None, self.queries[index]
        return int(match[1]), int(match[2])


def an_hour_of_points(now_ms: int) -> str:
    """Two PoPs, one point every 10 s for the last hour (the oldest a little before it)."""
    lines = []
    for pop, region, latency in (("fra1", "eu-west", 20.0), ("iad1", "us-east", 40.0)):
        for i in range(1, 365):
            at_ms = now_ms - i * STEP_MS
            lines.append(
                f"pop_metrics,pop={pop},region={region} latency_ms={latency + i % 7},up=1i"
                f" {at_ms * 1_000_000}"
            )
    return "\n".join(lines) + "\n"


def messages(connection: Any, kind: str) -> list[dict[str, Any]]:
    return [m for m in sent_messages(connection) if m["type"] == kind]


async def test_one_whole_window_query_then_one_small_query_per_tick_and_none_on_subscribe(
    influxd: Influxd, influx_db: str
) -> None:
    now_ms = int(time.time() * 1000)
    influxd.write(influx_db, an_hour_of_points(now_ms))
    hub = make_hub(list(TOPICS))
    async with httpx.AsyncClient(timeout=10) as client:
        source = RecordingSource(InfluxQLSource(client, influxd.url, influx_db))
        health = SourceHealth(source, max_age_s=20, ping_timeout_s=5)
        loop = BroadcastLoop(hub, source, TOPICS, health, interval_s=10, query_timeout_s=5)
        first = open_connection(hub)
        sent_messages(first)  # the welcome
        hub.subscribe(first, ("latency-history",))

        # The first refresh: one query of the whole hour, published whole.
        await loop.tick()
        assert len(source.queries) == 1
        start, end = source.range_ms(0)
        assert 3_600_000 - STEP_MS < end - start <= 3_600_000
        assert start % STEP_MS == 0
        [update] = messages(first, "metrics_update")
        window = update["data"]
        assert (window["window"], window["resolution"]) == ("1h", "10s")
        assert (window["from"], window["to"]) == (start, end)
        regions = {s["tags"]["region"]: s for s in window["series"]}
        assert sorted(regions) == ["eu-west", "us-east"]
        for series in regions.values():
            assert series["columns"] == ["time", "mean", "p95"]
            assert 355 <= len(series["values"]) <= 360
            times = [row[0] for row in series["values"]]
            assert times == sorted(times)
            assert times[0] >= start

        # A late write into eu-west's newest bucket; the next tick reads only the tail.
        newest = max(row[0] for row in regions["eu-west"]["values"])
        influxd.write(
            influx_db,
            f"pop_metrics,pop=fra1,region=eu-west latency_ms=500,up=1i {(newest + 1) * 10**6}\n",
        )
        await loop.tick()
        assert len(source.queries) == 2
        tail_start, tail_end = source.range_ms(1)
        assert tail_start == newest - STEP_MS
        # The newest point is 10 s old, its bucket starts up to 20 s ago, the read a step
        # before: never more than 30 s before the data was written (whatever the time now).
        assert tail_start >= now_ms - 3 * STEP_MS
        assert tail_end >= int(time.time() * 1000) - 5_000
        [append] = messages(first, "metrics_append")
        assert append["seq"] == update["seq"] + 1
        [changed] = append["data"]["series"]
        assert changed["tags"] == {"region": "eu-west"}
        [row] = changed["values"]  # only the bucket whose mean changed
        assert row[0] == newest
        assert row[2] == 500  # the p95 of its two points

        # A second subscriber gets the merged window from memory: no query.
        second = open_connection(hub)
        sent_messages(second)
        hub.subscribe(second, ("latency-history",))
        assert len(source.queries) == 2
        [whole] = messages(second, "metrics_update")
        assert whole["seq"] == append["seq"]
        assert whole["data"] == apply_append(window, append["data"])
