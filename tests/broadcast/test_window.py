"""The window store (broadcaster/broadcast/window.py): durations, the range each read needs,
merging, eviction, and agreement with the clients' merge rule. Pure: no I/O, no clock."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broadcaster.broadcast.window import (
    Window,
    WindowSpec,
    group_by_time_ms,
    parse_duration_ms,
    time_filter,
)
from broadcaster.client.window import apply_append
from broadcaster.sources.base import Series, StatementResult

STEP = 10_000
SPEC = WindowSpec.parse("1m", "10s")  # 6 steps: small enough to read the expectations
NOW = 1_800_000_005_000  # 5 s into a step


def answer(*series: tuple[str, list[list[Any]]]) -> list[StatementResult]:
    """One statement's answer: per region, rows of [time, mean, p95]."""
    return [
        StatementResult(
            tuple(
                Series(
                    "pop_metrics", ("time", "mean", "p95"), tuple(map(tuple, rows)), {"region": r}
                )
                for r, rows in series
            )
        )
    ]


def test_durations() -> None:
    assert parse_duration_ms("10s") == 10_000
    assert parse_duration_ms("1h") == 3_600_000
    assert parse_duration_ms("2d") == 172_800_000
    for bad in ("", "10", "1.5h", "0s", "10ms", "h", "-1m", "1 h"):
        with pytest.raises(ValueError, match="is not a duration"):
            parse_duration_ms(bad)
    assert group_by_time_ms("SELECT x FROM m WHERE $timeFilter GROUP BY time(10s), r") == 10_000
    assert group_by_time_ms("select x from m where $timeFilter group by r, TIME( 1m )") == 60_000
    assert group_by_time_ms("SELECT x FROM m WHERE $timeFilter GROUP BY r") is None


@pytest.mark.parametrize(
    ("window", "resolution", "problem"),
    [
        ("1h", "7s", "must divide"),
        ("10s", "1m", "must divide"),
        ("2d", "1s", "over 10000 points"),
        ("1x", "1s", "not a duration"),
    ],
)
def test_bad_specs_say_why(window: str, resolution: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        WindowSpec.parse(window, resolution)


def test_the_first_read_is_the_whole_window_from_a_whole_step() -> None:
    window = Window(SPEC)
    start, end = window.read_range(NOW)
    assert (start, end) == (NOW - 5_000 - 60_000 + STEP, NOW)  # rounded up to a whole step
    assert time_filter(start, end) == f"time >= {start}ms AND time < {end}ms"


def test_merging_keeps_the_window_and_reports_only_new_or_changed_rows() -> None:
    window = Window(SPEC)
    start, _ = window.read_range(NOW)
    t = [start + i * STEP for i in range(7)]  # t[5] is the step still filling at NOW
    first = window.merge(
        answer(
            ("eu-west", [[t[0], 20.004, 30.0], [t[4], 21.0, 31.0], [t[5], 22.0, None]]),
            ("us-east", [[t[1], 40.0, 50.0]]),
        ),
        NOW,
    )
    assert first.changed_rows == 4
    assert window.points == 4
    whole = window.whole()
    assert whole["window"] == "1m"
    assert whole["resolution"] == "10s"
    assert (whole["from"], whole["to"]) == (start, NOW)
    assert whole["asOf"] is not None
    assert whole["series"][0] == {
        "name": "pop_metrics",
        "tags": {"region": "eu-west"},
        "columns": ["time", "mean", "p95"],
        "values": [[t[0], 20.0, 30.0], [t[4], 21.0, 31.0], [t[5], 22.0, None]],
    }
    # The next read starts one step before the newest point; 10 s later the window moved on.
    later = NOW + STEP
    assert window.read_range(later) == (t[4], later)
    second = window.merge(
        answer(("eu-west", [[t[4], 21.0, 31.0], [t[5], 22.5, 33.0], [t[6], 23.0, 34.0]])), later
    )
    assert second.data["from"] == start + STEP
    assert second.data["to"] == later
    assert second.data["series"] == [
        {
            "name": "pop_metrics",
            "tags": {"region": "eu-west"},
            "columns": ["time", "mean", "p95"],
            "values": [[t[5], 22.5, 33.0], [t[6], 23.0, 34.0]],  # t[4] did not change
        }
    ]
    assert second.changed_rows == 2
    # t[0] fell out of the window; us-east's only row is still in it.
    values = {s["tags"]["region"]: s["values"] for s in window.whole()["series"]}
    assert [row[0] for row in values["eu-west"]] == [t[4], t[5], t[6]]
    assert [row[0] for row in values["us-east"]] == [t[1]]


def test_a_series_whose_rows_all_fall_out_is_removed() -> None:
    window = Window(SPEC)
    start, _ = window.read_range(NOW)
    window.merge(answer(("ap-south", [[start, 1.0, 2.0]])), NOW)
    merged = window.merge(answer(), NOW + 2 * STEP)
    assert window.whole()["series"] == []
    assert window.whole()["asOf"] is None
    assert merged.data["series"] == []
    # With no point left, the next read starts a step before the end of what was covered.
    later = NOW + 3 * STEP
    assert window.read_range(later) == ((NOW + 2 * STEP - STEP) // STEP * STEP, later)


def test_an_answer_that_is_not_a_windows_is_refused_and_changes_nothing() -> None:
    window = Window(SPEC)
    with pytest.raises(ValueError, match="no 'time' first column"):
        window.merge([StatementResult((Series("m", ("n",), ((1,),)),))], NOW)
    with pytest.raises(ValueError, match="non-numeric time"):
        window.merge([StatementResult((Series("m", ("time", "n"), (("x", 1),)),))], NOW)
    assert not window.built
    start, _ = window.read_range(NOW)
    window.merge(answer(("eu-west", [[start, 1.0, 2.0]])), NOW)
    before = window.whole()
    good = Series("pop_metrics", ("time", "mean", "p95"), ((start, 5.0, 6.0),), {"region": "x"})
    bad = Series("pop_metrics", ("time", "mean"), ((start, 1.0),), {"region": "eu-west"})
    with pytest.raises(ValueError, match="changed columns"):
        window.merge([StatementResult((good, bad))], NOW)
    assert window.whole() == before


ROWS = st.lists(
    st.tuples(
        st.sampled_from(["eu-west", "us-east", "ap-south"]),
        st.integers(0, 12),
        st.one_of(st.none(), st.floats(0, 500, allow_nan=False)),
    ),
    max_size=20,
)


@given(st.lists(ROWS, min_size=1, max_size=6))
def test_the_clients_merge_of_each_append_gives_the_servers_window(ticks: list[Any]) -> None:
    """Whatever the answers, previous whole window + append (client rule) == new whole."""
    window = Window(SPEC)
    base = NOW - 6 * STEP
    now = NOW
    client: dict[str, Any] | None = None
    for rows in ticks:
        by_region: dict[str, dict[int, list[Any]]] = {}
        for region, step, value in rows:
            by_region.setdefault(region, {})[base + step * STEP] = [
                base + step * STEP,
                value,
                value,
            ]
        merged = window.merge(
            answer(*((r, [by_region[r][t] for t in sorted(by_region[r])]) for r in by_region)), now
        )
        client = window.whole() if client is None else apply_append(client, merged.data)
        assert client == window.whole()
        now += STEP


@given(st.lists(ROWS, min_size=1, max_size=6))
def test_another_node_that_loads_the_whole_window_then_applies_each_append_holds_the_same(
    ticks: list[Any],
) -> None:
    """A cluster's other nodes: ``load`` of the first whole window, then ``apply`` of each
    append (never a query) == the querying node's window, and reads the same range next."""
    window, other = Window(SPEC), Window(SPEC)
    base = NOW - 6 * STEP
    now = NOW
    for rows in ticks:
        by_region: dict[str, dict[int, list[Any]]] = {}
        for region, step, value in rows:
            by_region.setdefault(region, {})[base + step * STEP] = [base + step * STEP, value, 1.0]
        first = not window.built
        merged = window.merge(
            answer(*((r, [by_region[r][t] for t in sorted(by_region[r])]) for r in by_region)), now
        )
        if first:
            other.load(window.whole())
        else:
            other.apply(merged.data)
        assert other.built
        assert other.whole() == window.whole()
        assert other.read_range(now + STEP) == window.read_range(now + STEP)
        now += STEP


def test_loading_something_that_is_not_a_window_says_so() -> None:
    window = Window(SPEC)
    with pytest.raises(KeyError):
        window.load({"series": [{"name": "m"}]})
    assert not window.built
    with pytest.raises(ValueError, match="no 'time' first column"):
        window.load(
            {
                "from": 0,
                "to": 1,
                "series": [{"name": "m", "tags": {}, "columns": ["v"], "values": [[1]]}],
            }
        )
