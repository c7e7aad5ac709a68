"""The garbage collector is paced by the broadcast: young generations after every tick, a full
collection at most once per period, thresholds restored after the service (virtual time)."""

from __future__ import annotations

import gc

import trio
import trio.testing

from broadcaster.ops.gc_pacing import GcPacer
from tests.broadcast.test_broadcast_loop import INTERVAL_S, make_loop, run_for
from tests.fakes import FakeSource, make_hub, open_connection


async def test_collections_follow_the_ticks(autojump_clock: trio.testing.MockClock) -> None:
    collected: list[tuple[float, int]] = []

    def collect(generation: int) -> int:
        collected.append((trio.current_time(), generation))
        return 0

    start = trio.current_time()
    hub = make_hub(["overview"], defaults=["overview"])
    with GcPacer(full_every_s=30, collect=collect) as pacer:
        loop = make_loop(hub, FakeSource(), "overview", after_tick=pacer.after_tick)
        open_connection(hub)
        await run_for(loop, 6 * INTERVAL_S + 1)
    # One collection right after each tick; every third (30 s) is a full one.
    assert [(round(at - start), generation) for at, generation in collected] == [
        (10, 1),
        (20, 1),
        (30, 2),
        (40, 1),
        (50, 1),
        (60, 2),
    ]


async def test_automatic_collection_is_paced_and_restored() -> None:
    before = gc.get_threshold()
    with GcPacer():
        with GcPacer():  # two services in one process
            assert gc.get_threshold()[0] == before[0]  # generation 0 stays automatic
            assert gc.get_threshold()[1] > 1_000_000
        assert gc.get_threshold()[1] > 1_000_000  # still paced while one service runs
    assert gc.get_threshold() == before
