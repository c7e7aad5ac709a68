"""The broadcast fast path end to end: the real service, real clients, loopback TCP.

The topic's values come from an in-process source (``serve(source=...)``): what is tested
here is fan-out, at ten updates a second, not the database path
(tests/sources/test_database_path.py).
"""

from __future__ import annotations

import socket
from functools import partial
from pathlib import Path

import trio

from tests.services import PaddedSource, StartService, write_topics_file
from tests.wsclient import (
    assert_no_gaps,
    eventually,
    get_json,
    raw_handshake,
    readers_and_a_stopped_peer,
)

READERS = 100


async def test_a_client_that_stops_reading_is_closed_while_100_others_miss_nothing(
    start_service: StartService, tmp_path: Path
) -> None:
    service = await start_service(
        source=PaddedSource(pad_bytes=5000),
        topics_file=write_topics_file(tmp_path, feed="SELECT feed"),
        default_topics="feed",
        broadcast_interval_ms=100,
        send_stall_timeout_ms=500,
    )
    received, status = await readers_and_a_stopped_peer(
        service.http_url, service.websocket.port, READERS
    )
    assert_no_gaps(received, at_least=10)
    assert status["summary"]["slowConsumersClosed"] == 1
    assert status["summary"]["activeConnections"] == READERS


async def test_status_reports_pending_output_and_replaced_updates(
    start_service: StartService, tmp_path: Path
) -> None:
    service = await start_service(
        source=PaddedSource(pad_bytes=20_000),
        topics_file=write_topics_file(tmp_path, feed="SELECT feed"),
        default_topics="feed",
        broadcast_interval_ms=100,
    )
    behind: socket.socket = await trio.to_thread.run_sync(
        partial(raw_handshake, "127.0.0.1", service.websocket.port, receive_buffer_bytes=4096)
    )
    try:
        await eventually(lambda: service.hub.counters.replaced_updates >= 3, timeout_s=20)
        _, status = await get_json(f"{service.http_url}/api/websocket/status")
    finally:
        behind.close()
    (connection,) = status["connections"]
    assert connection["replacedUpdates"] >= 3
    assert connection["pendingBytes"] > 0
    assert connection["pendingMessages"] >= 1
    assert status["summary"]["replacedUpdates"] >= 3
