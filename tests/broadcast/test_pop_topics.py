"""The built-in topics, run for real: generator data in a real influxd, queried by InfluxQLSource.

The fleet is written through the generator's own code with random events switched off and
exact ones forced (sin1 in regression for the last 10 minutes, jnb1 down for the last 3
rounds, zzz1 silent for 10 minutes), so every expected value is known. The shapes' handling
of odd answers (nulls, missing PoPs, garbage) is checked on hand-built results.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from statistics import mean
from typing import Any

import httpx
import pytest

from broadcaster.broadcast.pop_topics import (
    BUILTIN_TOPICS,
    REGRESSION_STATEMENTS,
    detect_regressions,
    overview_data,
    percentile,
    regressions_data,
)
from broadcaster.broadcast.topics import Topic
from broadcaster.errors import SourceError, SourceResponseError
from broadcaster.sources.base import Series, StatementResult
from broadcaster.sources.influxql import InfluxQLSource
from demo.generator import InfluxWriter, batches
from demo.simulation import MINUTE_MS, POPS, Outage, Point, Pop, Regression, Simulation
from tests.influxd import Influxd

INTERVAL_MS = 10_000
TOPICS = {topic.name: topic for topic in BUILTIN_TOPICS}
EMPTY_OVERVIEW = {
    "popCount": 0,
    "up": 0,
    "down": 0,
    "latencyMeanMs": None,
    "latencyP95Ms": None,
    "lossMeanPct": None,
    "regressionCount": 0,
    "regions": {},
    "asOf": None,
}


@dataclass(frozen=True)
class Fleet:
    """What was written: the newest round and when sin1's regression started."""

    now_ms: int
    regression_start_ms: int
    last_round: list[Point]


def ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def iso_z(time_ms: int) -> str:
    return datetime.fromtimestamp(time_ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


@pytest.fixture
def fleet(influxd: Influxd, influx_db: str) -> Fleet:
    """An hour of the whole fleet, up to the current 10 s round, plus one silent PoP."""
    now_ms = int(time.time() * 1000) // INTERVAL_MS * INTERVAL_MS
    start_ms = now_ms - 10 * MINUTE_MS
    simulation = Simulation(
        seed=11,
        regressions_per_pop_hour=0,
        outages_per_pop_hour=0,
        forced_regressions=[Regression("sin1", start_ms, now_ms + MINUTE_MS, increase=1.0)],
        forced_outages=[Outage("jnb1", now_ms - 2 * INTERVAL_MS, now_ms + MINUTE_MS)],
    )
    history = range(now_ms - 60 * MINUTE_MS + INTERVAL_MS, now_ms, INTERVAL_MS)
    points = list(simulation.rounds(history))
    last_round = simulation.round(now_ms)
    silent = Simulation(pops=[Pop("zzz1", "eu-west", 30.0, 0.1)])
    points += silent.rounds(range(now_ms - 20 * MINUTE_MS, now_ms - 10 * MINUTE_MS, INTERVAL_MS))
    # Loopback HTTP only: verify=False skips loading the CA bundle, 0.4 s per client.
    with httpx.Client(verify=False) as client:
        writer = InfluxWriter(client, influxd.url, influx_db)
        for batch in batches([*points, *last_round]):
            writer.write(batch)
    return Fleet(now_ms, start_ms, last_round)


async def run_topic(topic: Topic, influxd: Influxd, database: str) -> Any:
    async with httpx.AsyncClient(verify=False, timeout=10) as client:
        source = InfluxQLSource(client, influxd.url, database)
        return topic.shape(await source.query(topic.query))


def test_builtin_topics_are_overview_then_regressions() -> None:
    assert [topic.name for topic in BUILTIN_TOPICS] == [
        "overview",
        "regressions",
        "latency-history",
    ]
    assert all(topic.description for topic in BUILTIN_TOPICS)
    assert TOPICS["overview"].query.count(";") == len(REGRESSION_STATEMENTS)
    assert TOPICS["regressions"].query.count(";") == len(REGRESSION_STATEMENTS) - 1


async def test_regressions_finds_the_forced_one(
    fleet: Fleet, influxd: Influxd, influx_db: str
) -> None:
    data = await run_topic(TOPICS["regressions"], influxd, influx_db)

    assert [r["pop"] for r in data["regressions"]] == ["sin1"]
    found = data["regressions"][0]
    assert found["region"] == "ap-southeast"
    assert found["metric"] == "latency_ms"
    assert 80 < found["increasePct"] < 120  # the forced +100 %, give or take the daily drift
    assert found["currentMs"] == pytest.approx(2 * found["baselineMs"], rel=0.2)
    # The minute bucket holding the start may or may not be mostly regressed already.
    assert abs(ms(found["since"]) - fleet.regression_start_ms) <= MINUTE_MS
    assert found["since"].endswith("Z")
    assert data["asOf"] == iso_z(fleet.now_ms)


async def test_overview_counts_pops_and_agrees_with_regressions(
    fleet: Fleet, influxd: Influxd, influx_db: str
) -> None:
    data = await run_topic(TOPICS["overview"], influxd, influx_db)
    regressions = await run_topic(TOPICS["regressions"], influxd, influx_db)
    up = [p for p in fleet.last_round if p.up]
    latencies = [p.latency_ms for p in up if p.latency_ms is not None]

    assert data["popCount"] == len(POPS) + 1  # zzz1: seen this hour, silent for 10 minutes
    assert (data["up"], data["down"]) == (len(POPS) - 1, 2)  # jnb1 says up=0, zzz1 is silent
    assert data["regressionCount"] == len(regressions["regressions"]) == 1
    assert data["latencyMeanMs"] == pytest.approx(mean(latencies), abs=0.01)
    assert data["latencyP95Ms"] == pytest.approx(percentile(latencies, 0.95), abs=0.01)
    assert data["lossMeanPct"] == pytest.approx(mean(p.packet_loss_pct for p in up), abs=0.01)
    assert data["asOf"] == regressions["asOf"]
    regions = data["regions"]
    assert set(regions) == {pop.region for pop in POPS}
    assert regions["af-south"] == {"pops": 1, "up": 0, "latencyMeanMs": None}
    assert (regions["eu-west"]["pops"], regions["eu-west"]["up"]) == (5, 4)
    sin1 = next(p.latency_ms for p in up if p.pop == "sin1")
    syd1 = next(p.latency_ms for p in up if p.pop == "syd1")
    assert regions["ap-southeast"] == {
        "pops": 2,
        "up": 2,
        "latencyMeanMs": pytest.approx((sin1 + syd1) / 2, abs=0.01),
    }


async def test_an_empty_database_gives_empty_shapes(influxd: Influxd, influx_db: str) -> None:
    assert await run_topic(TOPICS["overview"], influxd, influx_db) == EMPTY_OVERVIEW
    assert await run_topic(TOPICS["regressions"], influxd, influx_db) == {
        "regressions": [],
        "asOf": None,
    }


async def test_a_missing_database_is_a_source_error_or_an_empty_shape(influxd: Influxd) -> None:
    # influxd 1.6 answers a multi-statement query on a missing database with "not executed",
    # which InfluxQLSource reports as a SourceResponseError before any shape runs.
    with contextlib.suppress(SourceError):
        assert await run_topic(TOPICS["overview"], influxd, "never_created") == EMPTY_OVERVIEW


def series(pop: str, columns: tuple[str, ...], *rows: tuple[Any, ...]) -> Series:
    region = {p.name: p.region for p in POPS}.get(pop, "nowhere")
    return Series("pop_metrics", ("time", *columns), tuple(rows), {"pop": pop, "region": region})


def answers(
    baseline: list[Series] | None = None,
    current: list[Series] | None = None,
    buckets: list[Series] | None = None,
    newest: list[Series] | None = None,
    latest: list[Series] | None = None,
) -> list[StatementResult]:
    parts = (baseline, current, buckets, newest, latest)
    return [StatementResult(tuple(part or ())) for part in parts]


def test_shapes_of_empty_results() -> None:
    assert overview_data(answers()) == EMPTY_OVERVIEW
    assert regressions_data(answers()[:4]) == {"regressions": [], "asOf": None}


def test_shapes_tolerate_nulls_and_missing_pops() -> None:
    results = answers(
        baseline=[
            series("fra1", ("median", "count"), (0, None, 3)),  # only down points this hour
            series("ams1", ("median", "count"), (0, 20.0, 360)),
            series("lhr1", ("median", "count"), (0, 22.0, 360)),
        ],
        current=[series("ams1", ("mean",), (0, None)), series("cdg1", ("mean",), (0, 90.0))],
        buckets=[series("ams1", ("mean",), (0, None), (60_000, 21.0))],
        newest=[series("", ("last",), (120_000, 1))],
        latest=[
            series("fra1", ("latency_ms", "packet_loss_pct", "up"), (120_000, None, 100, 0)),
            series("ams1", ("latency_ms", "packet_loss_pct", "up"), (120_000, None, None, 1)),
            series("", ("latency_ms", "packet_loss_pct", "up"), (120_000, 5.0, 0.0, 1)),
        ],
    )
    data = overview_data(results)

    assert (data["popCount"], data["up"], data["down"]) == (3, 1, 2)
    assert (data["latencyMeanMs"], data["latencyP95Ms"], data["lossMeanPct"]) == (None,) * 3
    assert data["regressionCount"] == 0
    assert data["asOf"] == "1970-01-01T00:02:00.000Z"
    assert data["regions"]["eu-central"] == {"pops": 1, "up": 0, "latencyMeanMs": None}


def regression_answers(*bucket_means: float) -> list[StatementResult]:
    rows = [(k * MINUTE_MS, value) for k, value in enumerate(bucket_means)]
    return answers(
        baseline=[series("sin1", ("median", "count"), (0, 30.0, 360))],
        current=[series("sin1", ("mean",), (0, 61.234))],
        buckets=[series("sin1", ("mean",), *rows)],
    )[:4]


def test_since_is_the_start_of_the_trailing_run_above_the_threshold() -> None:
    # Threshold: max(30 * 1.4, 30 + 10) = 42 ms. The newest bucket is still filling.
    found = detect_regressions(regression_answers(30, 60, 31, 45, 60, 62, 35))

    assert len(found) == 1
    assert found[0].since_ms == 3 * MINUTE_MS
    assert found[0].data() == {
        "pop": "sin1",
        "region": "ap-southeast",
        "metric": "latency_ms",
        "currentMs": 61.23,
        "baselineMs": 30.0,
        "increasePct": 104.11,
        "since": "1970-01-01T00:03:00.000Z",
    }


def test_since_falls_back_to_the_newest_bucket_when_none_is_above_yet() -> None:
    found = detect_regressions(regression_answers(30, 31, 32, 35))
    assert found[0].since_ms == 3 * MINUTE_MS


@pytest.mark.parametrize(
    ("baseline", "current", "in_regression"),
    [
        (30.0, 42.5, True),
        (30.0, 41.9, False),  # above +10 ms but not above 1.4x
        (20.0, 29.5, False),  # above 1.4x but not 10 ms more
        (20.0, 30.5, True),
        (0.0, 30.0, False),  # no usable baseline
    ],
)
def test_threshold_needs_both_the_ratio_and_the_absolute_floor(
    baseline: float, current: float, in_regression: bool
) -> None:
    results = answers(
        baseline=[series("sin1", ("median", "count"), (0, baseline, 360))],
        current=[series("sin1", ("mean",), (0, current))],
    )[:4]
    assert bool(detect_regressions(results)) is in_regression


def test_regressions_are_sorted_worst_first() -> None:
    results = answers(
        baseline=[series(pop, ("median", "count"), (0, 30.0, 1)) for pop in ("fra1", "sin1")],
        current=[series("fra1", ("mean",), (0, 50.0)), series("sin1", ("mean",), (0, 90.0))],
    )[:4]
    assert [r["pop"] for r in regressions_data(results)["regressions"]] == ["sin1", "fra1"]


@pytest.mark.parametrize(
    "results",
    [
        answers()[:3],  # wrong number of statements
        answers(current=[series("sin1", ("mean",), (0, "fast"))]),  # not a number
        answers(current=[series("sin1", ("median",), (0, 1.0))]),  # wrong column
        answers(latest=[series("sin1", ("latency_ms", "packet_loss_pct", "up"), ("now", 1, 0, 1))]),
    ],
)
def test_garbage_is_a_source_response_error(results: list[StatementResult]) -> None:
    with pytest.raises(SourceResponseError):
        overview_data(results)


def test_percentile_interpolates_between_ranks() -> None:
    assert percentile([], 0.95) is None
    assert percentile([7.0], 0.95) == 7.0
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 0.95) == pytest.approx(4.8)
