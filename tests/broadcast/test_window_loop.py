"""Window topics in the broadcast loop, in memory: tenant windows, failures and stale windows,
``snapshot`` requests, ``seq`` across updates and appends.

The test connections have no socket, so everything they are sent queues, and a queued
message of a topic is replaced by the next one (latest wins): the tests read after each tick.

The source is tests/fakes.py's ``FakeSource`` (a window query gets one row in the last second
it reads, its value the query count): these tests are about what the loop publishes and
when, which needs a source the test can take down. The real database path is covered by
tests/broadcast/test_window_influxd.py.
"""

from __future__ import annotations

import re
from typing import Any

import trio
import trio.testing

from broadcaster.auth.identity import Identity
from broadcaster.broadcast.loop import BroadcastLoop
from broadcaster.broadcast.topics import Topic, series_data
from broadcaster.broadcast.window import WindowSpec
from broadcaster.channels import Channel
from broadcaster.client.window import apply_append
from broadcaster.sources.health import SourceHealth
from tests.fakes import FakeSource, PolicyHub, make_hub, open_connection, sent_messages

SPEC = WindowSpec.parse("1m", "1s")
WINDOW_RANGE = re.compile(r"time >= (\d+)ms AND time < (\d+)ms")
HISTORY = Topic(
    name="history",
    query="SELECT n FROM m WHERE $timeFilter GROUP BY time(1s)",
    shape=series_data,
    window=SPEC,
)
SALES = Topic(
    name="sales",
    query="SELECT n FROM m WHERE t = {tenant} AND $timeFilter GROUP BY time(1s)",
    shape=series_data,
    window=SPEC,
)
TOPICS = {topic.name: topic for topic in (HISTORY, SALES)}


def make_loop(hub: PolicyHub, source: FakeSource) -> BroadcastLoop:
    health = SourceHealth(source, max_age_s=20, ping_timeout_s=5)
    return BroadcastLoop(hub, source, TOPICS, health, interval_s=10, query_timeout_s=5)


def subscribed(hub: PolicyHub, topic: str, tenant: str | None = None) -> Any:
    identity = None
    if tenant is not None:
        identity = Identity(sub=f"u-{tenant}", tenant=tenant, topics=None, expires_at_unix_s=0)
    connection = open_connection(hub, identity)
    sent_messages(connection)  # the welcome
    hub.subscribe(connection, (topic,))
    assert [m["type"] for m in sent_messages(connection)] == ["subscription_confirmed"]
    return connection


async def test_each_tenant_has_its_own_window() -> None:
    source = FakeSource()
    hub = make_hub(list(TOPICS), tenant_topics=["sales"])
    loop = make_loop(hub, source)
    acme, globex = subscribed(hub, "sales", "acme"), subscribed(hub, "sales", "globex")
    seen: dict[str, list[tuple[str, int]]] = {"acme": [], "globex": []}
    for _ in range(2):
        await loop.tick()
        for tenant, connection in (("acme", acme), ("globex", globex)):
            seen[tenant] += [(m["type"], m["seq"]) for m in sent_messages(connection)]
    assert len(source.calls) == 4
    assert sum("t = 'acme' AND time >= " in query for _, query in source.calls) == 2
    assert sum("t = 'globex' AND time >= " in query for _, query in source.calls) == 2
    for tenant in seen:
        # A tenant's channel takes its first seq after the topic's highest, as any tenant
        # topic's does: its own numbering from there.
        [(first, first_seq), (second, second_seq)] = seen[tenant]
        assert (first, second) == ("metrics_update", "metrics_append")
        assert second_seq == first_seq + 1
    windows = {c.tenant: s.window for c, s in loop.channels.items()}
    assert sorted(windows) == ["acme", "globex"]
    assert windows["acme"] is not windows["globex"]


async def test_a_failure_sends_the_error_then_the_whole_window_stale_and_appends_go_on() -> None:
    source = FakeSource()
    hub = make_hub(list(TOPICS))
    loop = make_loop(hub, source)
    client = subscribed(hub, "history")
    await loop.tick()
    [update] = sent_messages(client)
    source.down = True
    await loop.tick()
    error, stale = sent_messages(client)
    assert (error["code"], error["topic"]) == ("influxdb_unavailable", "history")
    assert (stale["type"], stale["seq"], stale["stale"]) == ("metrics_update", 2, True)
    assert stale["data"] == update["data"]
    source.down = False
    await loop.tick()
    [append] = sent_messages(client)
    assert (append["type"], append["seq"]) == ("metrics_append", 3)
    # A new subscriber gets the window as it is now, in one message, with the same seq.
    late = subscribed_with_value(hub)
    assert late["seq"] == 3
    assert late["stale"] is False
    assert late["data"] == apply_append(stale["data"], append["data"])


def subscribed_with_value(hub: PolicyHub) -> dict[str, Any]:
    connection = open_connection(hub)
    sent_messages(connection)
    hub.subscribe(connection, ("history",))
    confirmed, value = sent_messages(connection)
    assert confirmed["type"] == "subscription_confirmed"
    assert value["type"] == "metrics_update"
    return value


async def test_a_first_window_query_that_fails_is_tried_whole_again() -> None:
    source = FakeSource(down=True)
    hub = make_hub(list(TOPICS))
    loop = make_loop(hub, source)
    client = subscribed(hub, "history")
    await loop.tick()
    assert [m["type"] for m in sent_messages(client)] == ["error"]  # no window to resend
    assert loop.snapshot(Channel("history", None)) is None
    source.down = False
    await loop.tick()
    [update] = sent_messages(client)
    assert (update["type"], update["seq"]) == ("metrics_update", 2)
    for _, query in source.calls:  # the whole window both times
        match = WINDOW_RANGE.search(query)
        assert match is not None
        assert 59_000 < int(match[2]) - int(match[1]) <= 60_000


async def test_snapshot_sends_the_whole_window_from_memory(
    autojump_clock: trio.testing.MockClock,
) -> None:
    source = FakeSource()
    hub = make_hub([*TOPICS, "plain"])
    loop = make_loop(hub, source)
    client = subscribed(hub, "history")
    hub.send_snapshot(client, "history")
    assert sent_messages(client) == []  # no value yet: it will come
    await loop.tick()
    [update] = sent_messages(client)
    await loop.tick()
    [append] = sent_messages(client)
    queries = len(source.calls)
    snapshots = []
    for _ in range(3):  # one answer per topic per interval: the next two are ignored
        hub.send_snapshot(client, "history")
        snapshots += sent_messages(client)
    await trio.sleep(10)  # one broadcast interval later, a snapshot is answered again
    hub.send_snapshot(client, "history")
    snapshots += sent_messages(client)
    assert len(source.calls) == queries
    assert [(m["type"], m["seq"]) for m in snapshots] == [("metrics_update", 2)] * 2
    assert snapshots[0]["data"] == apply_append(update["data"], append["data"])
    # Encoded once per tick, whoever asks.
    frame = loop.snapshot(Channel("history", None))
    assert frame is loop.snapshot(Channel("history", None))

    hub.send_snapshot(client, "plain")
    hub.send_snapshot(client, "nope")
    not_subscribed, unknown = sent_messages(client)
    assert (not_subscribed["code"], not_subscribed["topic"]) == ("not_subscribed", "plain")
    assert (unknown["code"], unknown["topics"]) == ("invalid_topic", ["nope"])
