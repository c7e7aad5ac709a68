"""Aligned ticks: the arithmetic, and the loop's schedule in virtual time.

The loop runs on a MockClock (autojump) with a :class:`VirtualWallClock` that the test sets
and steps, so "tick k at ``k * interval + offset`` of the wall clock" is checked at exact
instants, including a wall clock that jumps while the loop sleeps.
"""

from __future__ import annotations

from typing import NamedTuple

import pytest
import trio
import trio.testing

from broadcaster.broadcast.loop import BroadcastLoop
from broadcaster.broadcast.ticks import next_tick, tick_instant, tick_number
from broadcaster.channels import Channel
from broadcaster.hub import Hub
from broadcaster.sources.health import SourceHealth
from tests.fakes import FakeSource, VirtualWallClock, make_hub, make_topics, open_connection

INTERVAL_MS = 10_000
INTERVAL_S = INTERVAL_MS / 1000
# A wall-clock start that is on no tick: 3.25 s past a multiple of the interval.
UNALIGNED_START_S = 1_800_000_003.25
K0 = 180_000_000  # tick_number of 1_800_000_000 s with offset 0


# --- the arithmetic -------------------------------------------------------------------------


@pytest.mark.parametrize("offset_ms", [0, 1000, 9999, 25_000])
def test_a_tick_happens_at_its_instant_and_keeps_its_number_until_the_next(offset_ms: int) -> None:
    for k in (-1, 0, 1, K0, K0 + 7):
        at = tick_instant(k, INTERVAL_MS, offset_ms)
        assert at == k * INTERVAL_MS + offset_ms
        assert tick_number(at, INTERVAL_MS, offset_ms) == k
        assert tick_number(at + INTERVAL_MS - 0.001, INTERVAL_MS, offset_ms) == k
        assert tick_number(at - 0.001, INTERVAL_MS, offset_ms) == k - 1


def test_the_offset_moves_the_instants_not_the_rhythm() -> None:
    now_ms = 1_800_000_000_500  # half a second past a multiple of 10 s
    assert tick_number(now_ms, INTERVAL_MS, 0) == K0
    assert tick_number(now_ms, INTERVAL_MS, 1000) == K0 - 1  # tick K0 comes at ...001 s
    assert tick_instant(K0, INTERVAL_MS, 1000) - tick_instant(K0, INTERVAL_MS, 0) == 1000


@pytest.mark.parametrize(
    ("last", "now_ms", "expected"),
    [
        (None, 1_800_000_003_250, K0 + 1),  # the first tick: the next instant, not now
        (None, 1_800_000_000_000, K0 + 1),  # even when now is an instant
        (K0, 1_800_000_000_000, K0 + 1),  # tick K0 just ran: the one after
        (K0, 1_800_000_009_999, K0 + 1),
        (K0, 1_800_000_025_000, K0 + 3),  # overran (or a jump ahead): K0+1, K0+2 skipped
        (K0, 1_799_999_999_990, K0 + 1),  # read 10 ms early: K0 does not run twice
        (K0, 1_799_999_975_000, K0 - 2),  # stepped back 25 s: the wall clock wins
    ],
)
def test_next_tick(last: int | None, now_ms: int, expected: int) -> None:
    assert next_tick(last, now_ms, INTERVAL_MS, 0) == expected


# --- the loop's schedule ----------------------------------------------------------------------


class Recorder:
    """What the loop did at each tick: Trio time, wall time, the tick's number."""

    def __init__(self, wall: VirtualWallClock) -> None:
        self.wall = wall
        self.loop: BroadcastLoop | None = None
        self.ticks: list[tuple[float, float, int | None]] = []

    def __call__(self) -> None:
        assert self.loop is not None
        self.ticks.append((trio.current_time(), self.wall(), self.loop.current_tick))


class Aligned(NamedTuple):
    loop: BroadcastLoop
    recorder: Recorder
    source: FakeSource
    hub: Hub


def aligned_loop(wall: VirtualWallClock, offset_s: float) -> Aligned:
    """A loop on ``wall`` with one topic (nobody subscribed yet) and a recorder of its ticks."""
    source = FakeSource()
    hub = make_hub(["overview"], defaults=["overview"])
    recorder = Recorder(wall)
    loop = BroadcastLoop(
        hub,
        source,
        make_topics("overview"),
        SourceHealth(source, max_age_s=2 * INTERVAL_S, ping_timeout_s=1),
        interval_s=INTERVAL_S,
        query_timeout_s=30.0,
        tick_offset_s=offset_s,
        wall_clock=wall,
        after_tick=recorder,
    )
    recorder.loop = loop
    return Aligned(loop, recorder, source, hub)


async def test_ticks_land_on_aligned_instants_from_the_next_one_after_start(
    autojump_clock: trio.testing.MockClock,
) -> None:
    wall = VirtualWallClock(UNALIGNED_START_S)
    loop, recorder, _, _ = aligned_loop(wall, offset_s=1.0)
    start = trio.current_time()
    with trio.move_on_after(40):
        await loop.run()
    # Started at ...003.25: the first tick waits for ...011 (7.75 s), then every 10 s.
    assert [round(at - start, 6) for at, _, _ in recorder.ticks] == [7.75, 17.75, 27.75, 37.75]
    assert [round(unix_s, 6) for _, unix_s, _ in recorder.ticks] == [
        1_800_000_011.0,
        1_800_000_021.0,
        1_800_000_031.0,
        1_800_000_041.0,
    ]
    numbers = [k for _, _, k in recorder.ticks]
    assert numbers == [K0 + 1, K0 + 2, K0 + 3, K0 + 4]
    for _, unix_s, k in recorder.ticks:
        assert k == tick_number(unix_s * 1000, INTERVAL_MS, 1000)
    assert loop.skipped_ticks == 0


async def test_the_offset_is_honoured(autojump_clock: trio.testing.MockClock) -> None:
    instants = {}
    for offset_s in (0.0, 1.0, 6.5):
        wall = VirtualWallClock(UNALIGNED_START_S)
        loop, recorder, _, _ = aligned_loop(wall, offset_s=offset_s)
        with trio.move_on_after(25):
            await loop.run()
        instants[offset_s] = [round(unix_s, 6) for _, unix_s, _ in recorder.ticks]
    assert instants == {
        0.0: [1_800_000_010.0, 1_800_000_020.0],
        1.0: [1_800_000_011.0, 1_800_000_021.0],
        6.5: [1_800_000_006.5, 1_800_000_016.5, 1_800_000_026.5],
    }


async def test_an_overrunning_tick_skips_to_the_next_aligned_instant(
    autojump_clock: trio.testing.MockClock,
) -> None:
    wall = VirtualWallClock(UNALIGNED_START_S)
    loop, recorder, source, hub = aligned_loop(wall, offset_s=1.0)
    open_connection(hub)  # a subscriber: ticks query (the first refresh at once)
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_for, loop, 50)
        await trio.sleep(7)  # after the first refresh, before the first tick (at 7.75)
        source.delay_s = 15.0  # the tick at ...011 ends at ...026: the one at ...021 is skipped
        await trio.sleep(2)
        source.delay_s = 0.0
    queried_at = [round(at - start, 6) for at, _ in source.calls]
    assert queried_at == [0.0, 7.75, 27.75, 37.75, 47.75]  # never at 22.75 nor bunched at 26
    assert [k for _, _, k in recorder.ticks] == [K0 + 1, K0 + 3, K0 + 4, K0 + 5]
    assert loop.skipped_ticks == 1
    assert hub.counters.ticks_skipped == 1


@pytest.mark.parametrize(
    ("step_s", "expected_at", "expected_numbers", "skipped"),
    [
        # Ahead by 35 s while sleeping to the tick at 20: that tick runs (scheduled before the
        # step), then the wall clock's next instant, 5 s later; nothing runs to catch up.
        (35.0, [10.0, 20.0, 25.0, 35.0], [K0 + 1, K0 + 2, K0 + 6, K0 + 7], 3),
        # Back by 35 s: the next instant of the wall clock, numbers restart from there.
        (-35.0, [10.0, 20.0, 25.0, 35.0], [K0 + 1, K0 + 2, K0 - 1, K0], 0),
    ],
)
async def test_a_wall_clock_step_moves_the_next_tick_without_bunching(
    autojump_clock: trio.testing.MockClock,
    step_s: float,
    expected_at: list[float],
    expected_numbers: list[int],
    skipped: int,
) -> None:
    wall = VirtualWallClock(1_800_000_000.0)
    loop, recorder, _, _ = aligned_loop(wall, offset_s=0.0)
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_for, loop, 36)
        await trio.sleep(15)
        wall.step(step_s)
    assert [round(at - start, 6) for at, _, _ in recorder.ticks] == expected_at
    assert [k for _, _, k in recorder.ticks] == expected_numbers
    assert loop.skipped_ticks == skipped


async def test_each_tick_refreshes_under_its_own_number_the_cluster_lease_id(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    wall = VirtualWallClock(UNALIGNED_START_S)
    loop, _, _, hub = aligned_loop(wall, offset_s=1.0)
    claimed: list[tuple[int | None, float]] = []
    refresh = loop.refresh

    async def recording(channel: Channel, tick_id: int | None = None) -> None:
        claimed.append((tick_id, round(wall(), 6)))
        await refresh(channel, tick_id)

    monkeypatch.setattr(loop, "refresh", recording)
    open_connection(hub)
    with trio.move_on_after(30):
        await loop.run()
    # The first subscriber's refresh at once (no tick: no tick id), then ticks K0+1...
    assert claimed == [
        (None, UNALIGNED_START_S),
        (K0 + 1, 1_800_000_011.0),
        (K0 + 2, 1_800_000_021.0),
        (K0 + 3, 1_800_000_031.0),
    ]


async def test_a_tick_run_by_hand_is_the_one_the_wall_clock_is_in(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    wall = VirtualWallClock(UNALIGNED_START_S)
    loop, _, _, hub = aligned_loop(wall, offset_s=1.0)
    claimed: list[int | None] = []

    async def recording(channel: Channel, tick_id: int | None = None) -> None:
        claimed.append(tick_id)

    monkeypatch.setattr(loop, "refresh", recording)
    open_connection(hub)
    await loop.tick()  # at ...003.25: in tick K0 (...001), the next is K0+1 (...011)
    assert claimed == [K0]


async def test_current_tick_is_none_before_the_first_tick(
    autojump_clock: trio.testing.MockClock,
) -> None:
    loop = aligned_loop(VirtualWallClock(UNALIGNED_START_S), offset_s=1.0).loop
    with trio.move_on_after(7):
        await loop.run()
    assert loop.current_tick is None
    assert loop.ticks == 0


async def run_for(loop: BroadcastLoop, seconds: float) -> None:
    with trio.move_on_after(seconds):
        await loop.run()
