"""The broadcast fast path end to end: the real service, real clients, loopback TCP.

The topic's values come from an in-process source (``serve(source=...)``): what is tested
here is fan-out, at ten updates a second, not the database path
(tests/sources/test_database_path.py).
"""

from __future__ import annotations

import socket
from functools import partial
from pathlib import Path
from typing import Any

import trio

from broadcaster.config import Settings, build_settings
from broadcaster.service import RunningService, serve
from broadcaster.sources.base import Series, StatementResult
from tests.wsclient import (
    assert_no_gaps,
    eventually,
    get_json,
    raw_handshake,
    readers_and_a_stopped_peer,
)

TOPICS_TOML = '[[topic]]\nname = "feed"\nquery = "SELECT feed"\n'
READERS = 100


class PaddedSource:
    """Answers every query at once with a counter and ``pad_bytes`` of padding."""

    def __init__(self, pad_bytes: int) -> None:
        self.pad = "x" * pad_bytes
        self.queries = 0

    async def query(self, statements: str) -> list[StatementResult]:
        await trio.lowlevel.checkpoint()
        self.queries += 1
        series = Series(name="feed", columns=("n", "pad"), values=((self.queries, self.pad),))
        return [StatementResult((series,))]

    async def ping(self) -> None:
        await trio.lowlevel.checkpoint()


def fan_out_settings(tmp_path: Path, **overrides: Any) -> Settings:
    topics = tmp_path / "topics.toml"
    topics.write_text(TOPICS_TOML)
    values: dict[str, Any] = {
        "ws_port": 0,
        "http_port": 0,
        "broadcast_interval_ms": 100,
        "topics_file": str(topics),
        "default_topics": "feed",
        "log_format": "console",
        "log_level": "warning",
    }
    values.update(overrides)
    return build_settings(values)


async def test_a_client_that_stops_reading_is_closed_while_100_others_miss_nothing(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    service: RunningService = await nursery.start(
        partial(
            serve,
            fan_out_settings(tmp_path, send_stall_timeout_ms=500),
            source=PaddedSource(pad_bytes=5000),
        )
    )
    received, status = await readers_and_a_stopped_peer(
        service.http_url, service.websocket.port, READERS
    )
    assert_no_gaps(received, at_least=10)
    assert status["summary"]["slowConsumersClosed"] == 1
    assert status["summary"]["activeConnections"] == READERS


async def test_status_reports_pending_output_and_replaced_updates(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    service: RunningService = await nursery.start(
        partial(serve, fan_out_settings(tmp_path), source=PaddedSource(pad_bytes=20_000))
    )
    behind: socket.socket = await trio.to_thread.run_sync(
        partial(raw_handshake, "127.0.0.1", service.websocket.port, receive_buffer_bytes=4096)
    )
    try:
        await eventually(lambda: service.hub.totals.replaced_updates >= 3, timeout_s=20)
        _, status = await get_json(f"{service.http_url}/api/websocket/status")
    finally:
        behind.close()
    (connection,) = status["connections"]
    assert connection["replacedUpdates"] >= 3
    assert connection["pendingBytes"] > 0
    assert connection["pendingMessages"] >= 1
    assert status["summary"]["replacedUpdates"] >= 3
