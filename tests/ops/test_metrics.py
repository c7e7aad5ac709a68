"""The deeper metrics: durations, update age, build and process families, uptime.

In memory and in virtual time (the hub and fake source of tests/fakes.py): the durations are
exact there. The families are read through the registry the service builds, so a name or a
label that changes here changes on /metrics.
"""

from __future__ import annotations

import time
from typing import Any

import trio
import trio.testing

from broadcaster import __version__
from broadcaster.broadcast.loop import BroadcastLoop
from broadcaster.broadcast.topics import Topic
from broadcaster.channels import Channel
from broadcaster.hub import Hub
from broadcaster.ops.http import create_app
from broadcaster.ops.metrics import build_registry
from broadcaster.protocol import CloseCode, iso_from_unix_ms
from broadcaster.sources.base import StatementResult
from broadcaster.sources.health import SourceHealth
from broadcaster.ws.frames import Frame
from tests.fakes import FakeSource, VirtualWallClock, make_hub, make_topics, open_connection

INTERVAL_S = 10.0
AS_OF_AGE_S = 120.0


def _as_of_topic(name: str) -> Topic:
    """A topic whose data says its newest point is ``AS_OF_AGE_S`` old (like the built-ins)."""

    def shape(results: list[StatementResult]) -> dict[str, Any]:
        return {"asOf": iso_from_unix_ms((time.time() - AS_OF_AGE_S) * 1000)}

    return Topic(name=name, query=f"q:{name}", shape=shape)


class _Service:
    """The parts the collector and the app read, built as the service builds them."""

    def __init__(self, hub: Hub, topics: dict[str, Topic], source: FakeSource | None = None):
        source = source if source is not None else FakeSource()
        self.hub = hub
        self.health = SourceHealth(source, max_age_s=2 * INTERVAL_S, ping_timeout_s=5)
        self.loop = BroadcastLoop(
            hub,
            source,
            topics,
            self.health,
            interval_s=INTERVAL_S,
            query_timeout_s=5.0,
            wall_clock=VirtualWallClock(),  # ticks at start + k * interval (tests/fakes.py)
        )
        self.registry = build_registry(hub, self.health, self.loop)

    def samples(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of a scrape, by name and sorted labels."""
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in self.registry.collect()
            for sample in family.samples
        }

    def app_client(self) -> Any:
        app = create_app(self.hub, self.health, self.registry, websocket_url="ws://127.0.0.1:1/")
        return app.test_client()


async def test_connection_duration_is_observed_once_at_close(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = make_hub(["overview"])
    service = _Service(hub, make_topics("overview"))
    connection = open_connection(hub)
    await trio.sleep(90)
    hub.publish(Channel("overview", None), Frame('{"type":"metrics_update"}', topic="overview"))
    connection.close(CloseCode.NORMAL, "bye")
    hub.close(connection)
    hub.close(connection)  # forgetting it twice observes nothing more
    samples = service.samples()
    name = "broadcaster_connection_duration_seconds"
    assert samples[(f"{name}_count", ())] == 1
    assert samples[(f"{name}_sum", ())] == 90
    assert samples[(f"{name}_bucket", (("le", "60.0"),))] == 0
    assert samples[(f"{name}_bucket", (("le", "300.0"),))] == 1
    assert samples[(f"{name}_bucket", (("le", "+Inf"),))] == 1


async def test_tick_and_query_durations_and_update_age_per_topic(
    autojump_clock: trio.testing.MockClock,
) -> None:
    source = FakeSource(delay_s=0.3)
    hub = make_hub(["overview", "plain"], defaults=["overview", "plain"])
    topics = {"overview": _as_of_topic("overview"), **make_topics("plain")}
    service = _Service(hub, topics, source)
    open_connection(hub)  # subscribing queries both topics at once (not a tick)
    with trio.move_on_after(2 * INTERVAL_S + 1):
        await service.loop.run()  # two ticks
    samples = service.samples()
    for topic in ("overview", "plain"):
        label = ("topic", topic)
        query = "broadcaster_query_duration_seconds"
        assert samples[(f"{query}_count", (label,))] == 3  # on subscribe, then 2 ticks
        assert abs(samples[(f"{query}_sum", (label,))] - 0.9) < 1e-9
        assert samples[(f"{query}_bucket", (("le", "0.25"), label))] == 0
        assert samples[(f"{query}_bucket", (("le", "0.5"), label))] == 3
    tick = "broadcaster_tick_duration_seconds"
    assert samples[(f"{tick}_count", ())] == 2  # the topics are queried concurrently
    assert abs(samples[(f"{tick}_sum", ())] - 0.6) < 1e-9
    # Only a topic whose data carries an asOf has an age; the wall clock moves on slightly.
    ages = {labels: value for (name, labels), value in samples.items() if "update_age" in name}
    assert list(ages) == [(("topic", "overview"),)]
    assert AS_OF_AGE_S <= ages[(("topic", "overview"),)] < AS_OF_AGE_S + 5


async def test_an_idle_tick_is_not_timed(autojump_clock: trio.testing.MockClock) -> None:
    hub = make_hub(["overview"])
    service = _Service(hub, make_topics("overview"))
    with trio.move_on_after(3 * INTERVAL_S + 1):
        await service.loop.run()
    assert service.loop.ticks == 3
    assert hub.timings.tick_duration.count == 0


def test_build_info_and_process_families() -> None:
    samples = _Service(make_hub(["overview"]), make_topics("overview")).samples()
    assert samples[("broadcaster_build_info", (("version", __version__),))] == 1
    assert samples[("process_resident_memory_bytes", ())] > 10 * 1024 * 1024
    assert samples[("process_open_fds", ())] >= 3
    assert samples[("process_cpu_seconds_total", ())] > 0
    assert abs(samples[("process_start_time_seconds", ())] - time.time()) < 24 * 3600


async def test_health_and_status_report_one_start_time_and_the_uptime_since(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = make_hub(["overview"], defaults=["overview"])
    client = _Service(hub, make_topics("overview")).app_client()
    headers = {"Host": "127.0.0.1:8080"}
    for _ in range(2):
        open_connection(hub)
    await trio.sleep(60)
    closing = open_connection(hub)
    open_connection(hub)
    closing.close(CloseCode.NORMAL, "bye")  # closing: not open any more
    await trio.sleep(30)  # open for 90, 90 and 30 s
    hub.counters.pings_unanswered += 2
    status = await (await client.get("/api/websocket/status", headers=headers)).get_json()
    health = await (await client.get("/health", headers=headers)).get_json()
    started = iso_from_unix_ms(hub.started_at_unix_ms)
    assert status["startedAt"] == health["startedAt"] == started
    # uptimeS is wall-clock time since the hub was built: tiny here, virtual time aside.
    assert 0 <= status["uptimeS"] <= health["uptimeS"] < 60
    assert status["summary"]["averageConnectionDurationS"] == 70.0
    assert status["summary"]["pingsUnanswered"] == 2


async def test_no_average_duration_without_open_connections() -> None:
    client = _Service(make_hub(["overview"]), make_topics("overview")).app_client()
    response = await client.get("/api/websocket/status", headers={"Host": "127.0.0.1:8080"})
    assert (await response.get_json())["summary"]["averageConnectionDurationS"] is None
