"""A fleet of simulated PoPs: realistic latency, loss and outages, with regressions.

Pure: given a seed and a sequence of timestamps, :class:`Simulation` always yields the same
points, so tests check it without a database or a clock. :mod:`demo.generator`
writes its points to InfluxDB.

Schema: measurement ``pop_metrics``, tags ``pop`` and ``region``, fields ``latency_ms``
(float), ``packet_loss_pct`` (float) and ``up`` (integer 1/0). A PoP that is down writes
``up=0i`` and 100 % loss but no latency, as a real probe that got no answer would.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

MEASUREMENT = "pop_metrics"
MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
PEAK_LOCAL_HOUR = 21.0  # evening streaming traffic is when latency is worst

# Hours from UTC that shift each region's daily pattern to its local evening.
REGION_UTC_OFFSET_H: Mapping[str, float] = {
    "eu-west": 0.0,
    "eu-central": 1.0,
    "us-east": -5.0,
    "us-west": -8.0,
    "sa-east": -3.0,
    "ap-northeast": 9.0,
    "ap-southeast": 8.0,
    "ap-south": 5.5,
    "af-south": 2.0,
    "me-central": 4.0,
}


@dataclass(frozen=True, slots=True)
class Pop:
    """One point of presence and its normal behaviour."""

    name: str
    region: str
    base_latency_ms: float
    base_loss_pct: float


# Base latencies stay >= 18 ms so that a +60 % regression is also > 10 ms, the absolute
# floor of the regression detector in broadcaster.broadcast.pop_topics.
POPS: tuple[Pop, ...] = (
    Pop("lhr1", "eu-west", 22.0, 0.08),
    Pop("ams1", "eu-west", 20.0, 0.06),
    Pop("cdg1", "eu-west", 23.0, 0.09),
    Pop("mad1", "eu-west", 27.0, 0.12),
    Pop("fra1", "eu-central", 19.0, 0.05),
    Pop("waw1", "eu-central", 26.0, 0.14),
    Pop("iad1", "us-east", 24.0, 0.07),
    Pop("ord1", "us-east", 28.0, 0.10),
    Pop("yyz1", "us-east", 30.0, 0.11),
    Pop("atl1", "us-east", 29.0, 0.09),
    Pop("sfo1", "us-west", 25.0, 0.08),
    Pop("sea1", "us-west", 27.0, 0.07),
    Pop("lax1", "us-west", 26.0, 0.10),
    Pop("gru1", "sa-east", 38.0, 0.25),
    Pop("scl1", "sa-east", 42.0, 0.30),
    Pop("nrt1", "ap-northeast", 24.0, 0.05),
    Pop("hnd1", "ap-northeast", 22.0, 0.05),
    Pop("icn1", "ap-northeast", 26.0, 0.06),
    Pop("sin1", "ap-southeast", 30.0, 0.12),
    Pop("syd1", "ap-southeast", 34.0, 0.15),
    Pop("bom1", "ap-south", 45.0, 0.35),
    Pop("del1", "ap-south", 48.0, 0.40),
    Pop("jnb1", "af-south", 52.0, 0.30),
    Pop("dxb1", "me-central", 36.0, 0.18),
)


@dataclass(frozen=True, slots=True)
class Point:
    """One PoP's measurements at one instant; ``latency_ms`` is None while it is down."""

    pop: str
    region: str
    time_ms: int
    latency_ms: float | None
    packet_loss_pct: float
    up: bool

    def line(self) -> str:
        """This point in InfluxDB line protocol, with a millisecond timestamp."""
        fields = [f"packet_loss_pct={self.packet_loss_pct:.3f}", f"up={int(self.up)}i"]
        if self.latency_ms is not None:
            fields.insert(0, f"latency_ms={self.latency_ms:.2f}")
        return (
            f"{MEASUREMENT},pop={self.pop},region={self.region} {','.join(fields)} {self.time_ms}"
        )


@dataclass(frozen=True, slots=True)
class Regression:
    """A latency regression: from ``start_ms`` (included) to ``end_ms`` (excluded).

    ``increase`` is relative (1.0 doubles the latency); ``extra_loss_pct`` is added to loss.
    """

    pop: str
    start_ms: int
    end_ms: int
    increase: float
    extra_loss_pct: float = 0.5

    def covers(self, time_ms: int) -> bool:
        return self.start_ms <= time_ms < self.end_ms


@dataclass(frozen=True, slots=True)
class Outage:
    """A PoP is down from ``start_ms`` (included) to ``end_ms`` (excluded)."""

    pop: str
    start_ms: int
    end_ms: int

    def covers(self, time_ms: int) -> bool:
        return self.start_ms <= time_ms < self.end_ms


def daily_factor(region: str, time_ms: int) -> float:
    """Multiplier of a region's latency at a time: 1 +/- 20 %, worst at 21:00 local time."""
    utc_hours = (time_ms % DAY_MS) / HOUR_MS
    local_hours = utc_hours + REGION_UTC_OFFSET_H.get(region, 0.0)
    return 1.0 + 0.2 * math.cos(2 * math.pi * (local_hours - PEAK_LOCAL_HOUR) / 24)


@dataclass
class Simulation:
    """The PoP fleet as a state machine: call :meth:`round` with increasing timestamps.

    Random regressions and outages start with a per-round probability derived from a rate per
    PoP-hour (so it does not depend on the interval) and end by themselves. Tests pass
    ``forced_regressions`` / ``forced_outages`` (and zero rates) to get exact behaviour.
    """

    seed: int = 0
    interval_ms: int = 10_000
    pops: Sequence[Pop] = POPS
    regressions_per_pop_hour: float = 0.15
    outages_per_pop_hour: float = 0.01
    forced_regressions: Sequence[Regression] = ()
    forced_outages: Sequence[Outage] = ()
    _rng: random.Random = field(init=False, repr=False)
    _regressions: dict[str, Regression] = field(init=False, default_factory=dict)
    _outages: dict[str, Outage] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    @property
    def active_regressions(self) -> Mapping[str, Regression]:
        """Random regressions in progress at the last round, by PoP (forced ones excluded)."""
        return dict(self._regressions)

    def round(self, time_ms: int) -> list[Point]:
        """Every PoP's point at ``time_ms``, advancing the regression and outage states."""
        return [self._point(pop, time_ms) for pop in self.pops]

    def rounds(self, times_ms: Iterable[int]) -> Iterator[Point]:
        """The points of several rounds, in time order."""
        for time_ms in times_ms:
            yield from self.round(time_ms)

    def _point(self, pop: Pop, time_ms: int) -> Point:
        rng = self._rng
        regression = self._advance_regression(pop, time_ms)
        down = self._advance_outage(pop, time_ms)
        if down:
            return Point(pop.name, pop.region, time_ms, None, 100.0, up=False)
        daily = daily_factor(pop.region, time_ms)
        latency = pop.base_latency_ms * daily * rng.gauss(1.0, 0.04)
        if rng.random() < 0.01:  # the odd slow probe
            latency *= rng.uniform(1.2, 1.6)
        loss = pop.base_loss_pct * (1 + 0.5 * (daily - 1) / 0.2) + rng.gauss(
            0, pop.base_loss_pct / 3
        )
        if regression is not None:
            latency *= 1 + regression.increase
            loss += regression.extra_loss_pct * rng.uniform(0.6, 1.4)
        return Point(
            pop.name,
            pop.region,
            time_ms,
            round(max(latency, 0.1), 2),
            round(min(max(loss, 0.0), 100.0), 3),
            up=True,
        )

    def _advance_regression(self, pop: Pop, time_ms: int) -> Regression | None:
        current = self._regressions.get(pop.name)
        ended = current is not None and not current.covers(time_ms)
        if ended:
            del self._regressions[pop.name]
            current = None
        # Not in the round one ended, so two never run back to back as if one was longer.
        if (
            current is None
            and not ended
            and self._rng.random() < self._per_round(self.regressions_per_pop_hour)
        ):
            duration_ms = int(self._rng.uniform(3, 15) * MINUTE_MS)
            current = Regression(
                pop.name,
                time_ms,
                time_ms + duration_ms,
                increase=self._rng.uniform(0.6, 2.0),
                extra_loss_pct=self._rng.uniform(0.3, 2.0),
            )
            self._regressions[pop.name] = current
        for forced in self.forced_regressions:
            if forced.pop == pop.name and forced.covers(time_ms):
                return forced
        return current

    def _advance_outage(self, pop: Pop, time_ms: int) -> bool:
        current = self._outages.get(pop.name)
        ended = current is not None and not current.covers(time_ms)
        if ended:
            del self._outages[pop.name]
            current = None
        # Not in the round one ended, so two never run back to back as if one was longer.
        if (
            current is None
            and not ended
            and self._rng.random() < self._per_round(self.outages_per_pop_hour)
        ):
            rounds = self._rng.randint(2, 6)
            current = Outage(pop.name, time_ms, time_ms + rounds * self.interval_ms)
            self._outages[pop.name] = current
        forced = any(o.pop == pop.name and o.covers(time_ms) for o in self.forced_outages)
        return forced or current is not None

    def _per_round(self, rate_per_hour: float) -> float:
        return rate_per_hour * self.interval_ms / HOUR_MS
