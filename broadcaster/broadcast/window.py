"""Window topics: the last ``window`` of a ``GROUP BY time(resolution)`` query, kept in memory.

A window topic's value is a time window (the last hour at 10 s resolution, say) that moves
with the clock. Re-reading and re-sending the whole window every tick would cost a full
query and a full message per client; instead one :class:`Window` per channel keeps the rows,
and each tick only the tail is read again and only what changed is sent::

    first refresh   query [from, now)                 -> the whole window (metrics_update)
    each tick       query [newest - resolution, now)  -> merge, evict rows older than from,
                                                         send new/changed rows (metrics_append)

Reading from one resolution step before the newest point re-reads the bucket that was still
filling and the one before it, so late writes show up as changed rows. ``from`` is the window
start rounded up to a whole step, so the oldest bucket is always complete.

Rows are identified by their series (measurement name + tags) and their time; a row whose
time is already there replaces it. The client side of the same rule is
:func:`broadcaster.client.window.apply_append`; docs/protocol.md states it for every client.

Everything here is pure (no I/O, no clock): the broadcast loop passes ``now_ms`` in.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from broadcaster.protocol import iso_from_unix_ms
from broadcaster.sources.base import Series, StatementResult

TIME_FILTER = "$timeFilter"
"""The placeholder of a window query that the service fills with the range it reads."""

DURATION = re.compile(r"^([1-9][0-9]{0,8})([smhd])$")
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
# InfluxQL duration literals in GROUP BY time(...): units it accepts, in milliseconds.
_INFLUX_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_INFLUX_UNIT_MS["w"] = 7 * _INFLUX_UNIT_MS["d"]
_GROUP_BY_TIME = re.compile(
    r"\bGROUP\s+BY\b[^;]*?\btime\s*\(\s*([0-9]+)(ms|s|m|h|d|w)\s*\)", re.IGNORECASE
)
MAX_WINDOW_POINTS = 10_000
"""At most this many resolution steps per window: bounds the memory of one series."""

SeriesKey = tuple[str, tuple[tuple[str, str], ...]]


def parse_duration_ms(text: str) -> int:
    """``"1h"`` -> 3600000: an integer and one of s, m, h, d.

    Raises:
        ValueError: not such a duration.
    """
    match = DURATION.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration (an integer and one of s, m, h, d: '10s')")
    return int(match[1]) * _UNIT_MS[match[2]]


def group_by_time_ms(query: str) -> int | None:
    """The interval of the query's ``GROUP BY time(...)`` in ms, or None if it has none."""
    match = _GROUP_BY_TIME.search(query)
    return None if match is None else int(match[1]) * _INFLUX_UNIT_MS[match[2].lower()]


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """A window topic's ``window`` and ``resolution``, as written and in ms."""

    window: str
    resolution: str
    window_ms: int
    resolution_ms: int

    @classmethod
    def parse(cls, window: str, resolution: str) -> WindowSpec:
        """Check and convert the topics file's values.

        Raises:
            ValueError: a bad duration, a resolution longer than the window or not dividing
                it, or more than :data:`MAX_WINDOW_POINTS` steps.
        """
        window_ms, resolution_ms = parse_duration_ms(window), parse_duration_ms(resolution)
        if window_ms % resolution_ms:
            raise ValueError(f"resolution {resolution!r} must divide window {window!r}")
        if window_ms // resolution_ms > MAX_WINDOW_POINTS:
            raise ValueError(
                f"window {window!r} at resolution {resolution!r} is over "
                f"{MAX_WINDOW_POINTS} points; use a coarser resolution"
            )
        return cls(window, resolution, window_ms, resolution_ms)

    def start_ms(self, now_ms: int) -> int:
        """The window's start at ``now_ms``: ``now - window`` rounded up to a whole step."""
        step = self.resolution_ms
        return math.ceil((now_ms - self.window_ms) / step) * step


def time_filter(start_ms: int, end_ms: int) -> str:
    """What ``$timeFilter`` becomes: epoch-millisecond literals, never client input."""
    return f"time >= {start_ms}ms AND time < {end_ms}ms"


@dataclass
class _Series:
    name: str
    tags: dict[str, str]
    columns: tuple[str, ...]
    rows: dict[int, tuple[Any, ...]] = field(default_factory=dict)  # time -> row (time first)

    def data(self, times: Iterable[int]) -> dict[str, Any]:
        return {
            "name": self.name,
            "tags": self.tags,
            "columns": list(self.columns),
            "values": [list(self.rows[time]) for time in sorted(times)],
        }


@dataclass(frozen=True, slots=True)
class Merged:
    """What one answer changed: the ``data`` of a ``metrics_append``."""

    data: dict[str, Any]
    changed_rows: int


class Window:
    """One channel's window: its rows, the range they cover, and how to read what is next.

    Until the first answer is merged (``built`` False) the next read is the whole window.
    """

    def __init__(self, spec: WindowSpec) -> None:
        self.spec = spec
        self.built = False
        self.from_ms = 0
        self.to_ms = 0
        self._series: dict[SeriesKey, _Series] = {}

    @property
    def points(self) -> int:
        """Rows held, over every series."""
        return sum(len(series.rows) for series in self._series.values())

    def newest_ms(self) -> int | None:
        """The time of the newest row held, or None."""
        return max((max(s.rows) for s in self._series.values() if s.rows), default=None)

    def read_range(self, now_ms: int) -> tuple[int, int]:
        """``(start, end)`` to read at ``now_ms``: the whole window until it is built, then
        from one step before its newest point (or before the end of what it covers, if it
        holds no point), never before the window's start."""
        start = self.spec.start_ms(now_ms)
        if not self.built:
            return start, now_ms
        newest = self.newest_ms()
        tail = (newest if newest is not None else self.to_ms) - self.spec.resolution_ms
        step = self.spec.resolution_ms
        return max(start, tail // step * step), now_ms

    def merge(self, results: Sequence[StatementResult], now_ms: int) -> Merged:
        """Merge the answer to the read of ``read_range(now_ms)``, then drop rows older
        than the window start at ``now_ms``.

        Raises:
            ValueError: the answer is not a window's (no numeric ``time`` first column, or
                a series whose columns changed); then nothing was merged.
        """
        checked = [self._checked(series) for result in results for series in result.series]
        changed: dict[SeriesKey, list[int]] = {}
        for key, answer, rows in checked:
            times = self._merge_rows(key, answer, rows)
            if times:
                changed.setdefault(key, []).extend(times)
        self.built = True
        self.from_ms = self.spec.start_ms(now_ms)
        self.to_ms = now_ms
        self._evict()
        series = [
            self._series[key].data(t for t in times if t >= self.from_ms)
            for key, times in sorted(changed.items())
            if key in self._series
        ]
        sent = [one for one in series if one["values"]]
        data = {"from": self.from_ms, "to": self.to_ms, "asOf": self._as_of(), "series": sent}
        return Merged(data, sum(len(one["values"]) for one in sent))

    def apply(self, data: Any) -> None:
        """Merge another node's ``metrics_append`` ``data`` (the rows it read and merged),
        as a client does: the window then holds what the publishing node's holds.

        Raises:
            ValueError, KeyError, TypeError: ``data`` is not an append's (the window is then
                in an unknown state: load a whole one before merging again).
        """
        for series in _series_of(data):
            key, answer, rows = self._checked(series)
            self._merge_rows(key, answer, rows)
        self.from_ms, self.to_ms = int(data["from"]), int(data["to"])
        self._evict()

    def load(self, data: Any) -> None:
        """Replace the window with another node's whole window (a ``metrics_update``'s
        ``data``).

        Raises:
            ValueError, KeyError, TypeError: ``data`` is not a whole window's (the window is
                then empty and not built).
        """
        self._series.clear()
        self.built = False
        self.apply(data)
        self.built = True

    def whole(self) -> dict[str, Any]:
        """The whole window: the ``data`` of a window topic's ``metrics_update``."""
        return {
            "window": self.spec.window,
            "resolution": self.spec.resolution,
            "from": self.from_ms,
            "to": self.to_ms,
            "asOf": self._as_of(),
            "series": [
                self._series[key].data(self._series[key].rows) for key in sorted(self._series)
            ],
        }

    def _as_of(self) -> str | None:
        return iso_from_unix_ms(self.newest_ms())

    def _checked(self, series: Series) -> tuple[SeriesKey, Series, list[tuple[Any, ...]]]:
        """A series of an answer, its key and its cleaned rows, or why it cannot be merged."""
        if not series.columns or series.columns[0] != "time":
            raise ValueError(f"series {series.name!r} has no 'time' first column")
        key: SeriesKey = (series.name, tuple(sorted(series.tags.items())))
        held = self._series.get(key)
        if held is not None and held.columns != series.columns:
            raise ValueError(f"series {series.name!r} changed columns to {list(series.columns)}")
        return key, series, [_clean_row(series.name, raw) for raw in series.values]

    def _merge_rows(self, key: SeriesKey, series: Series, rows: list[tuple[Any, ...]]) -> list[int]:
        """Merge one checked series; the times of the rows that are new or changed."""
        held = self._series.get(key)
        if held is None:
            held = self._series[key] = _Series(series.name, dict(series.tags), series.columns)
        changed = []
        for row in rows:
            time = row[0]
            if held.rows.get(time) != row:
                held.rows[time] = row
                changed.append(time)
        return changed

    def _evict(self) -> None:
        for key, series in list(self._series.items()):
            for time in [t for t in series.rows if t < self.from_ms]:
                del series.rows[time]
            if not series.rows:
                del self._series[key]


def _clean_row(name: str, raw: Sequence[Any]) -> tuple[Any, ...]:
    """A row with an integer time and floats rounded to 2 decimals."""
    time = raw[0]
    if isinstance(time, bool) or not isinstance(time, int | float):
        raise ValueError(f"series {name!r} has a non-numeric time {time!r}")
    return (int(time), *(_round(value) for value in raw[1:]))


def _round(value: Any) -> Any:
    if isinstance(value, float) and math.isfinite(value):
        return round(value, 2)
    return value


def _series_of(data: Any) -> list[Series]:
    """The series of a window message's ``data``, as the source would have answered them."""
    return [
        Series(
            str(one["name"]),
            tuple(str(column) for column in one["columns"]),
            tuple(tuple(row) for row in one["values"]),
            {str(k): str(v) for k, v in dict(one["tags"]).items()},
        )
        for one in data["series"]
    ]
