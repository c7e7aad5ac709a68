"""The watchers send once per transition, in virtual time (``autojump_clock``).

Their events go to a recording list (a fake: these tests are about when an event is made;
delivery to real receivers is tested in test_notify_sender.py and test_notify_service.py).
"""

from __future__ import annotations

import trio
import trio.testing

from broadcaster.ops.notify.events import Event, EventName
from broadcaster.ops.notify.watchers import (
    BrokerWatcher,
    ClientsGoneWatcher,
    DatabaseWatcher,
    HeartbeatWatcher,
)
from broadcaster.sources.health import SourceHealth
from tests.fakes import FakeSource


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[float, Event]] = []

    def notify(self, event: Event) -> None:
        self.events.append((trio.current_time(), event))

    def names(self) -> list[EventName]:
        return [event.name for _, event in self.events]


async def test_a_flapping_database_sends_one_down_and_one_recovered_per_transition(
    autojump_clock: trio.testing.MockClock,
) -> None:
    recorder = Recorder()
    watcher = DatabaseWatcher(recorder, after_failures=3)
    failures = 0

    def outcome(ok: bool) -> None:
        nonlocal failures
        failures = 0 if ok else failures + 1
        watcher.observe(None if ok else "refused", failures)

    for ok in (False, False, True, False, True):  # flaps under the threshold: nothing
        outcome(ok)
        await trio.sleep(1)
    assert recorder.events == []
    started = trio.current_time()
    for _ in range(20):  # twenty failed ticks: one database_down, at the third
        outcome(False)
        await trio.sleep(1)
    outcome(True)
    outcome(True)
    for _ in range(3):
        outcome(False)
    outcome(True)

    assert recorder.names() == [EventName.DATABASE_DOWN, EventName.DATABASE_RECOVERED] * 2
    (down_at, down), (_, recovered) = recorder.events[:2]
    assert down_at == started + 2
    assert down.title == "database_down: InfluxDB unreachable for 3 queries"
    assert recovered.title == "database_recovered: InfluxDB answering again after 20 s down"
    assert ("failed_queries", "20") in recovered.facts


async def test_source_health_outcomes_reach_the_watcher(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Queries and pings recorded by SourceHealth are what the watcher sees."""
    recorder = Recorder()
    source = FakeSource(down=True)
    health = SourceHealth(source, max_age_s=1, ping_timeout_s=1)
    health.on_outcome = DatabaseWatcher(recorder, after_failures=3).observe
    async with trio.open_nursery() as nursery:
        await nursery.start(health.serve_probes)
        health.record_failure("query refused")
        for _ in range(2):  # two pings, both failing: the third failure in a row
            await trio.sleep(2)
            await health.check()
        assert recorder.names() == [EventName.DATABASE_DOWN]
        source.down = False
        await trio.sleep(2)
        await health.check()
        nursery.cancel_scope.cancel()
    assert recorder.names() == [EventName.DATABASE_DOWN, EventName.DATABASE_RECOVERED]


async def test_heartbeat_failures_once_per_run_of_bad_sweeps() -> None:
    recorder = Recorder()
    watcher = HeartbeatWatcher(recorder, threshold=50, interval_s=15)

    for closed in (10, 50, 51, 80, 51, 3, 0, 70, 70):
        watcher.swept(closed)

    titles = [event.title for _, event in recorder.events]
    assert titles == [
        "heartbeat_failures: 51 connections closed for silence within one heartbeat interval",
        "heartbeat_failures: 70 connections closed for silence within one heartbeat interval",
    ]


async def test_clients_gone_after_the_deadline_armed_by_the_last_client_leaving(
    autojump_clock: trio.testing.MockClock,
) -> None:
    recorder = Recorder()
    clients = 0
    watcher = ClientsGoneWatcher(recorder, after_s=300, clients_now=lambda: clients)
    async with trio.open_nursery() as nursery:
        await nursery.start(watcher.run)
        await trio.sleep(1000)
        assert recorder.events == []  # never had clients: nothing

        clients = 1
        await trio.sleep(10)
        clients = 0
        watcher.on_closed(0)
        left_at = trio.current_time()
        await trio.sleep(100)
        clients = 1  # one comes and goes again: the deadline moves
        await trio.sleep(10)
        clients = 0
        watcher.on_closed(0)
        left_again_at = trio.current_time()
        await trio.sleep(1000)
        assert [at for at, _ in recorder.events] == [left_again_at + 300]
        assert left_again_at == left_at + 110
        assert recorder.events[0][1].title == "clients_gone: no clients for 5.0 min"

        clients = 2  # they come back; one leaves (one remains): nothing
        watcher.on_closed(1)
        await trio.sleep(1000)
        clients = 0
        watcher.on_closed(0)
        await trio.sleep(299)
        clients = 1  # connected before the deadline and still there: nothing
        await trio.sleep(1000)
        nursery.cancel_scope.cancel()
    assert recorder.names() == [EventName.CLIENTS_GONE]


async def test_the_broker_link_sends_one_down_and_one_recovered_per_transition(
    autojump_clock: trio.testing.MockClock,
) -> None:
    recorder = Recorder()
    watcher = BrokerWatcher(recorder, broker="redis (c)")
    watcher.link_changed(None)  # the first link: nothing to say
    assert recorder.events == []
    for _ in range(5):  # lost, then four reconnections that fail: one broker_down
        watcher.link_changed("connection refused")
        await trio.sleep(2)
    watcher.link_changed(None)
    watcher.link_changed(None)
    assert recorder.names() == [EventName.BROKER_DOWN, EventName.BROKER_RECOVERED]
    assert recorder.events[1][1].title == (
        "broker_recovered: broker redis (c) reachable again after 10 s down"
    )
    watcher.stopping = True  # the service's own shutdown ends the link
    watcher.link_changed("connection closed")
    assert len(recorder.events) == 2
