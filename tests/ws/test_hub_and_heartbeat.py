"""Hub fan-out and the heartbeat sweeper, in memory and in virtual time."""

from __future__ import annotations

import orjson
import pytest
import trio
import trio.testing

from broadcaster.channels import Channel
from broadcaster.protocol import CloseCode, ErrorCode
from broadcaster.ws.frames import Frame
from broadcaster.ws.heartbeat import sweep_heartbeats, sweep_once
from tests.fakes import make_hub, open_connection, sent_messages

TIMEOUT_S = 45.0


async def test_silent_connection_is_closed_and_counted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = make_hub(["overview"])
    quiet, chatty = open_connection(hub), open_connection(hub)
    await trio.sleep(TIMEOUT_S - 1)
    chatty.touch()
    assert sweep_once(hub, connection_timeout_s=TIMEOUT_S, ping_timeout_s=1) == 0
    await trio.sleep(2)
    assert sweep_once(hub, connection_timeout_s=TIMEOUT_S, ping_timeout_s=1) == 1
    assert quiet.close_code == CloseCode.HEARTBEAT_TIMEOUT
    assert chatty.close_code is None
    assert hub.counters.heartbeat_timeouts == 1
    # Sweeping again while it closes does not count it twice.
    assert sweep_once(hub, connection_timeout_s=TIMEOUT_S, ping_timeout_s=1) == 0


async def test_sweeper_runs_every_interval(autojump_clock: trio.testing.MockClock) -> None:
    hub = make_hub(["overview"])
    connection = open_connection(hub)
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        await nursery.start(
            lambda task_status: sweep_heartbeats(
                hub, interval_s=15, connection_timeout_s=TIMEOUT_S, task_status=task_status
            )
        )
        # Silent for 45 s is noticed at the first sweep after it: the one at 60 s.
        await trio.sleep_until(start + 59.999)
        assert connection.close_code is None
        await trio.sleep_until(start + 60.001)
        assert connection.close_code == CloseCode.HEARTBEAT_TIMEOUT
        nursery.cancel_scope.cancel()


async def test_client_behind_gets_the_latest_update_per_topic_not_a_backlog() -> None:
    # A connection with no socket queues everything: a client that reads nothing.
    hub = make_hub(["overview", "regressions"], defaults=["overview", "regressions"], outbox=4)
    behind, reading = open_connection(hub), open_connection(hub)
    sent_messages(behind)
    delivered_to_reading = 0
    for seq in range(1, 11):
        for topic in ("overview", "regressions"):
            hub.publish(
                Channel(topic, None), Frame(f'{{"type":"metrics_update","seq":{seq}}}', topic=topic)
            )
        delivered_to_reading += len(sent_messages(reading))
    assert delivered_to_reading == 1 + 20  # the welcome, then every update
    assert [m["seq"] for m in sent_messages(behind)] == [10, 10]  # one per topic, the newest
    assert behind.outbound.replaced_updates == 18
    assert hub.counters.replaced_updates == 18
    assert behind.close_code is None  # replaced updates never pile up: not too slow


async def test_backlog_over_the_message_limit_closes_only_the_slow_client() -> None:
    hub = make_hub(["overview"], defaults=["overview"], outbox=4)
    slow, fast = open_connection(hub), open_connection(hub)
    for number in range(5):  # errors are not replaced: they pile up
        for connection in (slow, fast):
            connection.send_error(ErrorCode.INVALID_MESSAGE, f"bad message {number}")
        assert len(sent_messages(fast)) >= 1
    assert slow.close_code == CloseCode.SLOW_CONSUMER
    assert slow.close_reason == "slow consumer: more than 4 messages pending"
    assert hub.counters.slow_consumers_closed == 1
    assert fast.close_code is None
    # What was pending gave way to the close frame.
    assert [type(item).__name__ for item in slow.drain()] == ["CloseFrame"]


async def test_backlog_over_the_byte_limit_closes_the_slow_client() -> None:
    hub = make_hub(["a", "b", "c"], defaults=["a", "b", "c"], max_pending_bytes=4096)
    slow = open_connection(hub)
    padding = "x" * 1500
    for topic in ("a", "b"):
        hub.publish(
            Channel(topic, None),
            Frame(f'{{"type":"metrics_update","pad":"{padding}"}}', topic=topic),
        )
    assert slow.close_code is None
    hub.publish(
        Channel("c", None), Frame(f'{{"type":"metrics_update","pad":"{padding}"}}', topic="c")
    )
    assert slow.close_code == CloseCode.SLOW_CONSUMER
    assert slow.close_reason == "slow consumer: more than 4096 bytes pending"


async def test_unknown_topics_get_an_error_and_known_ones_subscribe() -> None:
    hub = make_hub(["overview", "regressions"])
    connection = open_connection(hub)
    sent_messages(connection)
    hub.subscribe(connection, ("overview", "nope"))
    error, confirmed = sent_messages(connection)[:2]
    assert error == {
        "type": "error",
        "code": "invalid_topic",
        "message": "unknown topic 'nope'; available topics: 2 (listed in welcome.topics)",
        "topics": ["nope"],
        "unknownCount": 1,
    }
    assert confirmed == {"type": "subscription_confirmed", "topics": ["overview"]}
    hub.unsubscribe(connection, ("overview",))
    assert sent_messages(connection) == [{"type": "subscription_confirmed", "topics": []}]
    assert hub.channels_with_subscribers() == []
    assert connection.error_count == 1


async def test_unknown_topics_error_names_a_few_and_counts_all_in_under_1_kb() -> None:
    # Listing every unknown and available topic once made each bad subscribe a 2x amplifier.
    hub = make_hub(["overview", "regressions"])
    connection = open_connection(hub)
    sent_messages(connection)
    unknown = tuple(f"{n:03d}" + "x" * 125 for n in range(100))
    hub.subscribe(connection, unknown)
    hub.unsubscribe(connection, ("nope", "overview", "nada"))
    frames = [item.text for item in connection.drain() if isinstance(item, Frame)]
    assert len(frames[0].encode()) < 1024
    assert orjson.loads(frames[0]) == {
        "type": "error",
        "code": "invalid_topic",
        "message": f"unknown topics {unknown[0]!r}, {unknown[1]!r}, {unknown[2]!r} and 97 more; "
        "available topics: 2 (listed in welcome.topics)",
        "topics": list(unknown[:3]),
        "unknownCount": 100,
    }
    assert orjson.loads(frames[1]) == {
        "type": "error",
        "code": "invalid_topic",
        "message": "unknown topics 'nope', 'nada'; available topics: 2 (listed in welcome.topics)",
        "topics": ["nope", "nada"],
        "unknownCount": 2,
    }
    assert connection.error_count == 2


@pytest.mark.parametrize("outbox", [2, 3])
async def test_shutdown_drops_backlog_and_queues_message_then_close(outbox: int) -> None:
    hub = make_hub(["overview"], defaults=["overview"], outbox=outbox)
    connection = open_connection(hub)
    hub.publish(Channel("overview", None), Frame('{"type":"metrics_update"}', topic="overview"))
    hub.shutdown_all("server shutting down", 2000)
    queued = connection.drain()
    assert len(queued) == 2
    assert isinstance(queued[0], Frame)
    assert '"type":"server_shutdown"' in queued[0].text
    assert '"reconnectAfterMs":2000' in queued[0].text
    assert getattr(queued[1], "code", None) == CloseCode.GOING_AWAY
