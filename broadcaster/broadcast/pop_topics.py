"""The built-in topics: a fleet overview and the latency regressions of our PoPs.

``latency-history`` is a window topic (:mod:`broadcaster.broadcast.window`), not among the
default topics: the dashboard's chart subscribes to it.

They read the ``pop_metrics`` measurement (tags ``pop``, ``region``; fields ``latency_ms``,
``packet_loss_pct``, ``up``) that scripts/generate_metrics.py writes. Each topic is one HTTP
request holding several statements, and a pure ``shape`` turning the answers into JSON-ready
data: floats rounded to 2 decimals, timestamps as ISO-8601 UTC strings ending in ``Z``.

A regression is detected from the data alone, so it works on real metrics too: a PoP's
baseline is the median of its latency over the last hour (the median ignores a regression
shorter than half an hour), its current latency the mean of the last 2 minutes, and it is in
regression when current > baseline * 1.4 and current - baseline > 10 ms (the absolute floor
keeps noise on fast PoPs from counting). Both topics run the same statements through the same
code, so ``overview.regressionCount`` always equals the length of ``regressions.regressions``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from broadcaster.broadcast.topics import Topic, series_data
from broadcaster.broadcast.window import WindowSpec
from broadcaster.errors import SourceResponseError
from broadcaster.protocol import iso_from_unix_ms
from broadcaster.sources.base import Series, StatementResult

REGRESSION_RATIO = 1.4
REGRESSION_MIN_MS = 10.0
P95 = 0.95

# The regression statements, shared by both topics (results[0:4] of either answer).
BASELINE = (
    "SELECT median(latency_ms), count(up) FROM pop_metrics"
    " WHERE time > now() - 1h GROUP BY pop, region"
)
CURRENT = "SELECT mean(latency_ms) FROM pop_metrics WHERE time > now() - 2m GROUP BY pop, region"
BUCKETS = (
    "SELECT mean(latency_ms) FROM pop_metrics"
    " WHERE time > now() - 1h GROUP BY time(1m), pop, region fill(none)"
)
NEWEST = "SELECT last(up) FROM pop_metrics WHERE time > now() - 1h"
# Overview only: each PoP's latest point, with nulls where a field is missing (unlike last()).
LATEST = (
    "SELECT latency_ms, packet_loss_pct, up FROM pop_metrics"
    " WHERE time > now() - 2m GROUP BY pop, region ORDER BY time DESC LIMIT 1"
)
REGRESSION_STATEMENTS = (BASELINE, CURRENT, BUCKETS, NEWEST)
# The latency-history window topic: mean and p95 per region, 10 s steps over the last hour.
LATENCY_HISTORY = (
    "SELECT mean(latency_ms) AS mean, percentile(latency_ms, 95) AS p95 FROM pop_metrics"
    " WHERE $timeFilter GROUP BY time(10s), region fill(none)"
)


@dataclass(frozen=True, slots=True)
class PopRegression:
    """One PoP whose recent latency is well above its usual level."""

    pop: str
    region: str
    current_ms: float
    baseline_ms: float
    since_ms: int | None

    @property
    def increase_pct(self) -> float:
        return (self.current_ms - self.baseline_ms) / self.baseline_ms * 100

    def data(self) -> dict[str, Any]:
        return {
            "pop": self.pop,
            "region": self.region,
            "metric": "latency_ms",
            "currentMs": _round(self.current_ms),
            "baselineMs": _round(self.baseline_ms),
            "increasePct": _round(self.increase_pct),
            "since": iso_from_unix_ms(self.since_ms),
        }


def regressions_data(results: Sequence[StatementResult]) -> dict[str, Any]:
    """``{"regressions": [...], "asOf"}``, the worst regression first."""
    _expect_statements(results, len(REGRESSION_STATEMENTS))
    found = detect_regressions(results)
    return {
        "regressions": [r.data() for r in found],
        "asOf": iso_from_unix_ms(_newest_ms(results[3])),
    }


def overview_data(results: Sequence[StatementResult]) -> dict[str, Any]:
    """Fleet health from each PoP's latest point of the last 2 minutes.

    A PoP seen in the last hour counts as down when its latest point says ``up=0`` or it has no
    point in the last 2 minutes. Latency and loss figures are over the PoPs that are up.
    """
    _expect_statements(results, len(REGRESSION_STATEMENTS) + 1)
    regions: dict[str, str] = {}
    for series in (*results[0].series, *results[4].series):
        pop, region = _pop_tags(series)
        if pop:
            regions.setdefault(pop, region)
    up_latency: dict[str, float | None] = {}
    up_loss: list[float] = []
    for series in results[4].series:
        pop, _ = _pop_tags(series)
        for row in _rows(series, ("latency_ms", "packet_loss_pct", "up")):
            if pop and row["up"] == 1:
                up_latency[pop] = row["latency_ms"]
                if row["packet_loss_pct"] is not None:
                    up_loss.append(row["packet_loss_pct"])
    latencies = [value for value in up_latency.values() if value is not None]
    return {
        "popCount": len(regions),
        "up": len(up_latency),
        "down": len(regions) - len(up_latency),
        "latencyMeanMs": _round(_mean(latencies)),
        "latencyP95Ms": _round(percentile(latencies, P95)),
        "lossMeanPct": _round(_mean(up_loss)),
        "regressionCount": len(detect_regressions(results)),
        "regions": _regions(regions, up_latency),
        "asOf": iso_from_unix_ms(_newest_ms(results[3])),
    }


def detect_regressions(results: Sequence[StatementResult]) -> list[PopRegression]:
    """The PoPs in regression, from the answers to :data:`REGRESSION_STATEMENTS`.

    ``since`` is the start of the trailing run of 1-minute buckets above the threshold; the
    newest bucket is still filling, so it may be below without breaking the run.
    """
    baselines = {key: row["median"] for key, row in _one_row_per_pop(results[0], ("median",))}
    buckets: dict[tuple[str, str], list[tuple[int, float | None]]] = {}
    for series in results[2].series:
        rows = _rows(series, ("mean",))
        buckets[_pop_tags(series)] = [(row["time"], row["mean"]) for row in rows]
    found = []
    for key, row in _one_row_per_pop(results[1], ("mean",)):
        baseline, current = baselines.get(key), row["mean"]
        if baseline is None or current is None or baseline <= 0:
            continue
        threshold = max(baseline * REGRESSION_RATIO, baseline + REGRESSION_MIN_MS)
        if current > threshold:
            since = _run_start(buckets.get(key, []), threshold)
            found.append(PopRegression(key[0], key[1], current, baseline, since))
    return sorted(found, key=lambda r: (-r.increase_pct, r.pop))


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """The ``fraction`` quantile, interpolated between ranks (numpy's default); None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _run_start(buckets: list[tuple[int, float | None]], threshold: float) -> int | None:
    newest_first = sorted(buckets, key=lambda bucket: bucket[0], reverse=True)
    if newest_first and not _above(newest_first[0][1], threshold):
        newest_first = newest_first[1:]
    since = None
    for time_ms, mean in newest_first:
        if not _above(mean, threshold):
            break
        since = time_ms
    if since is None and buckets:
        since = max(time_ms for time_ms, _ in buckets)  # the 2-minute mean is above, no bucket yet
    return since


def _above(value: float | None, threshold: float) -> bool:
    return value is not None and value > threshold


def _regions(regions: dict[str, str], up_latency: dict[str, float | None]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for region in sorted(set(regions.values())):
        pops = [pop for pop, pop_region in regions.items() if pop_region == region]
        latencies = [up_latency[pop] for pop in pops if up_latency.get(pop) is not None]
        summary[region] = {
            "pops": len(pops),
            "up": sum(1 for pop in pops if pop in up_latency),
            "latencyMeanMs": _round(_mean([value for value in latencies if value is not None])),
        }
    return summary


def _expect_statements(results: Sequence[StatementResult], count: int) -> None:
    if len(results) != count:
        raise SourceResponseError(f"expected {count} statement results, got {len(results)}")


def _pop_tags(series: Series) -> tuple[str, str]:
    return series.tags.get("pop", ""), series.tags.get("region", "")


def _one_row_per_pop(
    result: StatementResult, fields: tuple[str, ...]
) -> Iterator[tuple[tuple[str, str], dict[str, Any]]]:
    for series in result.series:
        key = _pop_tags(series)
        for row in _rows(series, fields)[:1]:
            if key[0]:
                yield key, row


def _rows(series: Series, fields: tuple[str, ...]) -> list[dict[str, Any]]:
    """The series' rows with ``time`` (int ms) and ``fields`` (numbers or None), checked."""
    missing = {"time", *fields} - set(series.columns)
    if missing:
        raise SourceResponseError(f"series {series.name!r} lacks columns {sorted(missing)}")
    rows = series.rows()
    for row in rows:
        if not _is_number(row["time"]):
            raise SourceResponseError(f"series {series.name!r} has a non-numeric time")
        if not all(row[name] is None or _is_number(row[name]) for name in fields):
            raise SourceResponseError(f"series {series.name!r} has a non-numeric value")
    return rows


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _newest_ms(result: StatementResult) -> int | None:
    times = [row["time"] for series in result.series for row in _rows(series, ())]
    return int(max(times)) if times else None


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 2)


BUILTIN_TOPICS: tuple[Topic, ...] = (
    Topic(
        name="overview",
        query="; ".join((*REGRESSION_STATEMENTS, LATEST)),
        shape=overview_data,
        description="PoPs up and down, fleet and per-region latency, loss, regression count",
    ),
    Topic(
        name="regressions",
        query="; ".join(REGRESSION_STATEMENTS),
        shape=regressions_data,
        description="PoPs whose latency is over 1.4x their hourly median, worst first",
    ),
    Topic(
        name="latency-history",
        query=LATENCY_HISTORY,
        shape=series_data,  # unused: a window topic's answers are merged into its window
        description="mean and p95 latency per region over the last hour, 10 s steps (window)",
        window=WindowSpec.parse("1h", "10s"),
    ),
)
