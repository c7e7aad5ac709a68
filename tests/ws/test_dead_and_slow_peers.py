"""Peers that stop answering, stop reading or flood, against the real service over loopback.

The misbehaving peers are raw TCP sockets that complete the WebSocket handshake and then
do nothing: no reads, no pongs. Everybody else must not notice them.

The topic values come from an in-process source (``start_service``), not from influxd: what
is tested here is the socket side (heartbeats, the slow-consumer limit, the input rate limit),
which never looks at where an update came from. The database path has its own tests
(tests/sources/test_database_path.py, tests/test_service_e2e.py).
"""

from __future__ import annotations

from pathlib import Path

import trio

from tests.services import PaddedSource, StartService, write_topics_file
from tests.wsclient import (
    assert_no_gaps,
    connect,
    eventually,
    get_json,
    next_message,
    raw_handshake,
    readers_and_a_stopped_peer,
)


async def test_dead_peer_is_found_and_closed_by_the_heartbeat(
    start_service: StartService,
) -> None:
    service = await start_service(
        heartbeat_interval_ms=200, connection_timeout_ms=1000, default_topics=""
    )
    port = service.websocket.port
    status_url = f"{service.http_url}/api/websocket/status"
    async with connect(f"ws://127.0.0.1:{port}/ws") as alive:
        await next_message(alive)
        dead = await trio.to_thread.run_sync(raw_handshake, "127.0.0.1", port)
        try:
            await eventually(lambda: service.hub.counters.heartbeat_timeouts == 1)

            async def only_alive_left() -> bool:
                _, status = await get_json(status_url)
                return bool(status["summary"]["trackedConnections"] == 1)

            await eventually(only_alive_left)
        finally:
            dead.close()
        _, status = await get_json(status_url)
        assert status["summary"]["heartbeatTimeouts"] == 1
        # The live client answered every ping on its own and is still here, with an RTT.
        (connection,) = status["connections"]
        rtt_ms = connection["lastPingRttMs"]
        assert isinstance(rtt_ms, float)
        assert 0 <= rtt_ms < 1000  # loopback
        await alive.send_message('{"type": "ping", "id": 9}')
        assert (await next_message(alive))["id"] == 9


async def test_slow_reader_is_closed_and_others_miss_nothing(
    start_service: StartService, tmp_path: Path
) -> None:
    # ~100 KB per update, ten per second: a peer that never reads fills its socket buffers
    # within a few ticks, and then takes nothing. Its queue never grows past two frames (a
    # newer update replaces a queued one), so what closes it is the send stall timeout.
    service = await start_service(
        source=PaddedSource(pad_bytes=100_000),
        topics_file=write_topics_file(tmp_path, big="SELECT * FROM big"),
        default_topics="big",
        broadcast_interval_ms=100,
        send_stall_timeout_ms=1000,
    )
    received, status = await readers_and_a_stopped_peer(
        service.http_url, service.websocket.port, 5, max_message_size=1 << 24
    )
    assert_no_gaps(received, at_least=10)
    assert status["summary"]["slowConsumersClosed"] == 1


async def test_flooding_client_does_not_disturb_others(start_service: StartService) -> None:
    service = await start_service(default_topics="")
    url = f"ws://127.0.0.1:{service.websocket.port}/ws"
    sent = 0
    with trio.fail_after(60):
        async with connect(url) as flooder, connect(url) as bystander:
            flooder_id = (await next_message(flooder))["connectionId"]
            await next_message(bystander)

            async def flood() -> None:
                # Never reads its answers: pings, garbage and unknown topics, as fast as it can.
                nonlocal sent
                frames = ['{"type":"ping"}', "not json", '{"type":"subscribe","topics":["x"]}']
                while True:
                    await flooder.send_message(frames[sent % 3])
                    sent += 1

            async with trio.open_nursery() as flooding:
                flooding.start_soon(flood)
                await eventually(lambda: sent >= 2000)
                for number in range(20):
                    await bystander.send_message(f'{{"type":"ping","id":{number}}}')
                    pong = await next_message(bystander, timeout_s=5)
                    assert pong == {**pong, "type": "pong", "id": number}
                flooding.cancel_scope.cancel()
            (flooded,) = [c for c in service.hub.connections_now() if c.id == flooder_id]
            # The flood costs the server little: over its frame allowance the server stops
            # reading (TCP holds the rest back), and of what it read, the messages over the
            # rate limit were dropped unparsed.
            assert 0 < flooded.dropped_messages < sent / 2
            assert flooded.close_code is None
            await bystander.send_message('{"type":"ping","id":"after"}')
            assert (await next_message(bystander))["id"] == "after"


async def test_rate_limited_client_is_told_and_stays_connected(
    start_service: StartService,
) -> None:
    service = await start_service(
        default_topics="", client_messages_per_s=0.1, client_message_burst=10
    )
    async with connect(f"ws://127.0.0.1:{service.websocket.port}/ws") as ws:
        await next_message(ws)
        for number in range(15):
            await ws.send_message(f'{{"type":"ping","id":{number}}}')
        answers = [await next_message(ws) for _ in range(11)]
    assert [a["id"] for a in answers if a["type"] == "pong"] == list(range(10))
    (limited,) = [a for a in answers if a["type"] == "error"]
    assert limited["code"] == "rate_limited"
