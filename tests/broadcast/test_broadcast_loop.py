"""The broadcast loop in virtual time (MockClock with autojump): ticks, query counts, staleness.

In memory with a fake source (tests/fakes.py); the real source and real clients are covered
by the end-to-end tests. The loop's wall clock is a :class:`VirtualWallClock` that starts on
an aligned instant with offset 0, so its ticks fall at ``start + k * interval`` (the aligned
ticks themselves: tests/broadcast/test_ticks.py).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import orjson
import pytest
import trio
import trio.testing

from broadcaster.broadcast.loop import BroadcastLoop
from broadcaster.channels import Channel
from broadcaster.hub import Hub
from broadcaster.sources.health import SourceHealth
from broadcaster.ws.frames import Frame
from tests.fakes import (
    FakeSource,
    VirtualWallClock,
    make_hub,
    make_topics,
    open_connection,
    sent_messages,
)

INTERVAL_S = 10.0
TIMEOUT_S = 5.0
OVERVIEW = Channel("overview", None)


def make_loop(hub: Hub, source: FakeSource, *names: str, **options: Any) -> BroadcastLoop:
    """The loop under test; built before any connection subscribes, as the service does."""
    health = SourceHealth(source, max_age_s=2 * INTERVAL_S, ping_timeout_s=TIMEOUT_S)
    return BroadcastLoop(
        hub,
        source,
        make_topics(*names),
        health,
        interval_s=INTERVAL_S,
        query_timeout_s=TIMEOUT_S,
        wall_clock=VirtualWallClock(),
        **options,
    )


async def run_for(loop: BroadcastLoop, seconds: float) -> None:
    """Run the loop for ``seconds`` of virtual time, then cancel it."""
    with trio.move_on_after(seconds):
        await loop.run()


async def test_no_query_without_subscribers(autojump_clock: trio.testing.MockClock) -> None:
    source = FakeSource()
    hub = make_hub(["overview"])
    loop = make_loop(hub, source, "overview")
    await run_for(loop, 5 * INTERVAL_S + 1)
    assert loop.ticks == 5
    assert source.calls == []


async def test_one_query_per_topic_per_tick_with_many_clients(
    autojump_clock: trio.testing.MockClock,
) -> None:
    source = FakeSource()
    hub = make_hub(["overview", "regressions", "idle"], defaults=["overview", "regressions"])
    loop = make_loop(hub, source, "overview", "regressions", "idle")
    clients = [open_connection(hub) for _ in range(40)]
    received: dict[str, list[dict[str, Any]]] = {client.id: [] for client in clients}

    async def read_every_second() -> None:
        # Clients that read: one that does not would only get the latest update per topic.
        while True:
            await trio.sleep(1)
            for client in clients:
                received[client.id] += sent_messages(client)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_every_second)
        await run_for(loop, 3 * INTERVAL_S + 1)
        nursery.cancel_scope.cancel()
    # One immediate refresh when each topic got its first subscriber, then one per tick.
    assert source.count("q:overview") == 1 + 3
    assert source.count("q:regressions") == 1 + 3
    assert source.count("q:idle") == 0
    for client in clients:
        messages = received[client.id] + sent_messages(client)
        updates = [m for m in messages if m["type"] == "metrics_update"]
        assert [(m["topic"], m["seq"]) for m in updates if m["topic"] == "overview"] == [
            ("overview", 1),
            ("overview", 2),
            ("overview", 3),
            ("overview", 4),
        ]


async def test_ticks_are_drift_free(autojump_clock: trio.testing.MockClock) -> None:
    source = FakeSource(delay_s=0.3)
    hub = make_hub(["overview"], defaults=["overview"])
    loop = make_loop(hub, source, "overview")
    open_connection(hub)
    start = trio.current_time()
    await run_for(loop, 4 * INTERVAL_S + 1)
    offsets = [round(at - start, 6) for at, _ in source.calls]
    # The refresh at 0, then ticks on the 10 s grid, although every query takes 0.3 s.
    assert offsets == [0.0, 10.0, 20.0, 30.0, 40.0]


async def test_overrunning_tick_skips_instead_of_bunching(
    autojump_clock: trio.testing.MockClock,
) -> None:
    source = FakeSource(delay_s=0.0)
    hub = make_hub(["overview"], defaults=["overview"])
    loop = BroadcastLoop(
        hub,
        source,
        make_topics("overview"),
        SourceHealth(source, max_age_s=1, ping_timeout_s=1),
        interval_s=INTERVAL_S,
        query_timeout_s=25.0,
        wall_clock=VirtualWallClock(),
    )
    open_connection(hub)
    start = trio.current_time()
    source.delay_s = 0.0
    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(run_for, loop, 6 * INTERVAL_S + 1))
        await trio.sleep(INTERVAL_S - 1)  # after the refresh, before the first tick
        source.delay_s = 15.0  # the first tick (at 10) ends at 25: the tick at 20 is skipped
        await trio.sleep(2)
        source.delay_s = 0.0
    offsets = [round(at - start, 6) for at, _ in source.calls]
    assert offsets == [0.0, 10.0, 30.0, 40.0, 50.0, 60.0]
    assert loop.skipped_ticks == 1


async def test_outage_sends_error_then_stale_value_and_recovers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    source = FakeSource()
    hub = make_hub(["overview"], defaults=["overview"])
    loop = make_loop(hub, source, "overview")
    client = open_connection(hub)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(loop.run)
        await trio.sleep(1)
        good = [m for m in sent_messages(client) if m["type"] == "metrics_update"]
        assert [m["stale"] for m in good] == [False]

        source.down = True
        await trio.sleep(INTERVAL_S)
        during = sent_messages(client)
        assert [m["type"] for m in during] == ["error", "metrics_update"]
        assert during[0]["code"] == "influxdb_unavailable"
        assert during[0]["topic"] == "overview"
        assert during[0]["cause"] == "unavailable"
        assert during[1]["stale"] is True
        assert during[1]["data"] == good[0]["data"]
        assert during[1]["timestamp"] == good[0]["timestamp"]
        assert during[1]["seq"] == good[0]["seq"] + 1
        assert loop.health.healthy is False

        source.down = False
        await trio.sleep(INTERVAL_S)
        after = sent_messages(client)
        assert [(m["type"], m["stale"]) for m in after] == [("metrics_update", False)]
        assert after[0]["data"] != good[0]["data"]
        assert loop.health.healthy is True
        nursery.cancel_scope.cancel()
    assert client.error_count == 1


async def test_slow_query_times_out_as_unavailable(autojump_clock: trio.testing.MockClock) -> None:
    source = FakeSource(delay_s=TIMEOUT_S + 1)
    hub = make_hub(["overview"], defaults=["overview"])
    loop = make_loop(hub, source, "overview")
    client = open_connection(hub)
    await run_for(loop, 1 + TIMEOUT_S)
    errors = [m for m in sent_messages(client) if m["type"] == "error"]
    assert len(errors) == 1
    assert errors[0]["code"] == "influxdb_unavailable"
    assert "timed out after 5000 ms" in errors[0]["message"]
    assert errors[0]["cause"] == "timeout"


async def test_rejected_query_says_so(autojump_clock: trio.testing.MockClock) -> None:
    source = FakeSource(rejected=True)
    hub = make_hub(["overview"], defaults=["overview"])
    loop = make_loop(hub, source, "overview")
    client = open_connection(hub)
    await run_for(loop, 1)
    (error,) = [m for m in sent_messages(client) if m["type"] == "error"]
    assert error["code"] == "influxdb_unavailable"
    assert error["cause"] == "query_rejected"
    assert "error parsing query" in error["message"]


@pytest.mark.parametrize("topics_followed_already", [False, True])
async def test_subscriber_gets_latest_value_at_once(
    autojump_clock: trio.testing.MockClock, topics_followed_already: bool
) -> None:
    source = FakeSource()
    hub = make_hub(["overview"])
    loop = make_loop(hub, source, "overview")
    if topics_followed_already:
        hub.subscribe(open_connection(hub), ("overview",))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(loop.run)
        await trio.sleep(INTERVAL_S * 1.5)
        calls_before = len(source.calls)
        late = open_connection(hub)
        sent_messages(late)  # the welcome
        hub.subscribe(late, ("overview",))
        await trio.sleep(0.001)  # far less than an interval
        messages = sent_messages(late)
        assert [m["type"] for m in messages] == ["subscription_confirmed", "metrics_update"]
        # A followed topic is served from the cache; a new one is queried at once.
        expected_new_queries = 0 if topics_followed_already else 1
        assert len(source.calls) - calls_before == expected_new_queries
        nursery.cancel_scope.cancel()


async def test_resubscribing_cannot_force_extra_queries(
    autojump_clock: trio.testing.MockClock,
) -> None:
    source = FakeSource()
    hub = make_hub(["overview"])
    loop = make_loop(hub, source, "overview")
    client = open_connection(hub)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(loop.run)
        await trio.sleep(INTERVAL_S * 0.25)
        hub.subscribe(client, ("overview",))  # first subscriber: queried at once
        await trio.sleep(0.001)
        messages = sent_messages(client)
        for _ in range(50):  # a client toggling as fast as it likes
            hub.unsubscribe(client, ("overview",))
            hub.subscribe(client, ("overview",))
            await trio.sleep(0.001)
            messages += sent_messages(client)
        updates = [m for m in messages if m["type"] == "metrics_update"]
        # One query; every resubscription within the interval was served from the cache.
        assert len(source.calls) == 1
        assert len(updates) == 51
        assert {m["seq"] for m in updates} == {1}
        nursery.cancel_scope.cancel()


# --- on_subscribe: what the hub asks the loop when a connection subscribes --------------------


async def test_on_subscribe_answers_from_the_cache_and_refreshes_only_when_needed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    source = FakeSource()
    hub = make_hub(["overview"])  # nobody subscribes through it: the ticks query nothing
    loop = make_loop(hub, source, "overview")
    async with trio.open_nursery() as nursery:
        await nursery.start(loop.run)
        # No value yet: nothing to offer; the first subscriber's topic is queried once,
        # however many subscribe before the answer.
        assert loop.on_subscribe(OVERVIEW, first=True) is None
        assert loop.on_subscribe(OVERVIEW, first=True) is None
        await trio.sleep(1)
        assert source.count("q:overview") == 1
        # A value from the last interval is offered as is, to the first subscriber or not.
        for first in (True, False):
            frame = loop.on_subscribe(OVERVIEW, first=first)
            assert frame is not None
            assert frame.topic == "overview"
            assert orjson.loads(frame.text)["seq"] == 1
        assert source.count("q:overview") == 1
        # An interval later, a followed topic still gets the value (its tick is coming)...
        await trio.sleep(INTERVAL_S)
        old = loop.on_subscribe(OVERVIEW, first=False)
        assert old is not None
        assert orjson.loads(old.text)["seq"] == 1
        assert source.count("q:overview") == 1
        # ...but a first subscriber gets a fresh query instead of a value that old.
        assert loop.on_subscribe(OVERVIEW, first=True) is None
        await trio.sleep(1)
        assert source.count("q:overview") == 2
        fresh = loop.on_subscribe(OVERVIEW, first=False)
        assert fresh is not None
        assert orjson.loads(fresh.text)["seq"] == 2
        nursery.cancel_scope.cancel()


async def test_the_hub_offers_what_its_listener_answers() -> None:
    hub = make_hub(["a", "b"])
    calls: list[tuple[str, bool]] = []
    cached = Frame('{"type":"metrics_update","topic":"a"}', topic="a")

    class Listener:
        def on_subscribe(self, channel: Channel, *, first: bool) -> Frame | None:
            calls.append((channel.topic, first))
            return cached if channel.topic == "a" else None

    hub.subscription_listener = Listener()
    one, two = open_connection(hub), open_connection(hub)
    sent_messages(one), sent_messages(two)  # the welcomes
    hub.subscribe(one, ("a", "b"))
    hub.subscribe(two, ("a",))
    hub.subscribe(two, ("a",))  # already subscribed: the listener is not asked again
    assert calls == [("a", True), ("b", True), ("a", False)]
    assert [m["type"] for m in sent_messages(one)] == ["subscription_confirmed", "metrics_update"]
    assert [m["type"] for m in sent_messages(two)] == [
        "subscription_confirmed",
        "metrics_update",
        "subscription_confirmed",
    ]
