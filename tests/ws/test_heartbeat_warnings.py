"""The heartbeat's early warnings: unanswered pings and stale connections, before the 4000.

In memory and in virtual time: a connection never attached to a socket queues its pings and
never gets a pong, which is exactly a peer that stopped answering.
"""

from __future__ import annotations

import struct

import trio
import trio.testing
from structlog.testing import capture_logs
from wsproto.events import Pong

from broadcaster.ws.connection import Connection
from broadcaster.ws.frames import Control
from broadcaster.ws.heartbeat import STALE_NAMED, sweep_heartbeats, sweep_once
from tests.fakes import make_hub, open_connection

INTERVAL_S = 15.0
TIMEOUT_S = 45.0


def _answer_ping(connection: Connection) -> None:
    """Play the client: answer the ping queued for ``connection`` with its pong."""
    pings = [item for item in connection.drain() if isinstance(item, Control)]
    assert pings, "no ping was sent"
    payload = pings[-1].wire[2:]  # an unmasked frame of 8 bytes: a 2-byte header
    assert len(payload) == struct.calcsize("!d")
    connection._on_pong(Pong(payload=payload))


async def test_a_ping_unanswered_by_the_next_heartbeat_is_counted_once_and_logged_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = make_hub(["overview"])
    silent, answering = open_connection(hub), open_connection(hub)
    with capture_logs() as logs:
        sweep_once(hub, connection_timeout_s=TIMEOUT_S, ping_timeout_s=TIMEOUT_S)  # pings both
        await trio.sleep(INTERVAL_S)
        _answer_ping(answering)
        sweep_once(hub, connection_timeout_s=TIMEOUT_S, ping_timeout_s=TIMEOUT_S)
        assert (silent.pings_unanswered, answering.pings_unanswered) == (1, 0)
        assert hub.counters.pings_unanswered == 1
        # The same ping still unanswered at the next heartbeat is not counted again.
        await trio.sleep(INTERVAL_S)
        _answer_ping(answering)
        sweep_once(hub, connection_timeout_s=TIMEOUT_S, ping_timeout_s=TIMEOUT_S)
        assert hub.counters.pings_unanswered == 1
    warnings = [entry for entry in logs if entry["event"] == "ping unanswered"]
    assert warnings == [
        {
            "event": "ping unanswered",
            "log_level": "warning",
            "connection_id": silent.id,
            "ip": "127.0.0.1",
            "waited_ms": 15000,
        }
    ]


async def test_each_unanswered_ping_counts_and_only_the_first_is_logged(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # With a ping timeout under the interval, every heartbeat sends a new ping: three
    # heartbeats after the first ping, three pings went unanswered.
    hub = make_hub(["overview"])
    connection = open_connection(hub)
    with capture_logs() as logs:
        for _ in range(4):
            connection.touch()  # active (it sends messages) but never answers pings
            sweep_once(hub, connection_timeout_s=TIMEOUT_S, ping_timeout_s=1)
            await trio.sleep(INTERVAL_S)
    assert connection.pings_unanswered == hub.counters.pings_unanswered == 3
    assert [entry["event"] for entry in logs].count("ping unanswered") == 1
    assert connection.close_code is None


async def test_a_pong_in_time_is_never_counted(autojump_clock: trio.testing.MockClock) -> None:
    hub = make_hub(["overview"])
    connection = open_connection(hub)
    for _ in range(5):
        sweep_once(hub, connection_timeout_s=TIMEOUT_S, ping_timeout_s=1)
        await trio.sleep(1)
        _answer_ping(connection)
        await trio.sleep(INTERVAL_S - 1)
    assert hub.counters.pings_unanswered == 0
    assert connection.last_ping_rtt_ms == 1000.0


async def test_one_stale_connections_line_per_heartbeat_before_the_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = make_hub(["overview"])
    silent, chatty = open_connection(hub), open_connection(hub)
    start = trio.current_time()
    with capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            await nursery.start(
                lambda task_status: sweep_heartbeats(
                    hub,
                    interval_s=INTERVAL_S,
                    connection_timeout_s=TIMEOUT_S,
                    task_status=task_status,
                )
            )
            for _ in range(4):  # chatty speaks every 10 s; silent never does
                await trio.sleep(10)
                chatty.touch()
            await trio.sleep_until(start + 60.5)  # heartbeats at 15, 30, 45 and 60 s
            nursery.cancel_scope.cancel()
    stale = [entry for entry in logs if entry["event"] == "stale connections"]
    # Silent for more than 22.5 s at the heartbeats of 30 and 45 s; closed (4000) at 60 s.
    assert [entry["connections"] for entry in stale] == [
        [{"id": silent.id, "ip": "127.0.0.1", "idle_ms": 30000}],
        [{"id": silent.id, "ip": "127.0.0.1", "idle_ms": 45000}],
    ]
    assert all(entry["count"] == 1 and entry["not_named"] == 0 for entry in stale)
    assert all(entry["silent_over_ms"] == 22500 for entry in stale)
    assert silent.close_code == 4000
    assert chatty.close_code is None


async def test_the_stale_line_names_the_first_few_and_counts_the_rest(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = make_hub(["overview"])
    connections = [open_connection(hub) for _ in range(STALE_NAMED + 5)]
    await trio.sleep(30)
    with capture_logs() as logs:
        sweep_once(hub, connection_timeout_s=TIMEOUT_S, ping_timeout_s=TIMEOUT_S)
    (line,) = [entry for entry in logs if entry["event"] == "stale connections"]
    assert line["count"] == STALE_NAMED + 5
    assert [named["id"] for named in line["connections"]] == [
        connection.id for connection in connections[:STALE_NAMED]
    ]
    assert line["not_named"] == 5


async def test_no_stale_line_when_everyone_spoke_recently(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = make_hub(["overview"])
    open_connection(hub)
    await trio.sleep(TIMEOUT_S / 2)  # exactly half: not more than half
    with capture_logs() as logs:
        sweep_once(hub, connection_timeout_s=TIMEOUT_S, ping_timeout_s=TIMEOUT_S)
    assert [entry for entry in logs if entry["event"] == "stale connections"] == []
