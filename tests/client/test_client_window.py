"""The Python client and window topics against the REAL service (``serve()`` in the test's
nursery, over loopback): the merged window it delivers is the service's, message after
message, and a lost ``metrics_append`` makes it ask for a snapshot and carry on.

Most values come from the in-process ``FakeSource`` (a window query gets one row in the last
second it reads), since what is tested is the wire and the client; one test runs the
built-in ``latency-history`` on a real influxd end to end (the database path in detail is
tests/broadcast/test_window_influxd.py).

To lose an append, the client connects through :class:`LossyLink`, a TCP relay on loopback
that forwards every byte except one server frame (the n-th ``metrics_append``). Server frames
are never masked nor fragmented (broadcaster/ws/frames.py), so the relay can cut one out.
"""

from __future__ import annotations

import logging
import struct
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio

from broadcaster.client import MetricsUpdate, open_client
from broadcaster.client.window import is_window
from broadcaster.service import RunningService
from tests.broadcast.test_window_influxd import an_hour_of_points
from tests.influxd import Influxd
from tests.services import HISTORY_TOPIC, StartService, StartServiceOnInfluxd
from tests.wsclient import JSON, connect, next_message, send_json


def topics_file(directory: Path) -> str:
    path = directory / "topics.toml"
    path.write_text(HISTORY_TOPIC)
    return str(path)


class LossyLink:
    """A TCP relay to ``port`` that drops the ``drop``-th ``metrics_append`` frame sent by the
    server and forwards everything else, in order."""

    def __init__(self, port: int, drop: int) -> None:
        self.port = port
        self.drop = drop
        self.appends = 0
        self.dropped: JSON | None = None

    async def serve(self, *, task_status: trio.TaskStatus[int]) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(self._relay, listeners)

    async def _relay(self, client: trio.SocketStream) -> None:
        server = await trio.open_tcp_stream("127.0.0.1", self.port)
        async with client, server, trio.open_nursery() as nursery:
            nursery.start_soon(self._pump, client, server, nursery.cancel_scope)
            nursery.start_soon(self._frames, server, client, nursery.cancel_scope)

    async def _pump(
        self, source: trio.SocketStream, sink: trio.SocketStream, scope: trio.CancelScope
    ) -> None:
        async for data in source:
            await sink.send_all(data)
        scope.cancel()

    async def _frames(
        self, source: trio.SocketStream, sink: trio.SocketStream, scope: trio.CancelScope
    ) -> None:
        buffer = b""
        handshake_done = False
        async for data in source:
            buffer += data
            if not handshake_done:
                if b"\r\n\r\n" not in buffer:
                    continue
                head, buffer = buffer.split(b"\r\n\r\n", 1)
                await sink.send_all(head + b"\r\n\r\n")
                handshake_done = True
            while (frame := _whole_frame(buffer)) is not None:
                size, payload = frame
                wire, buffer = buffer[:size], buffer[size:]
                if b'"type":"metrics_append"' in payload:
                    self.appends += 1
                    if self.appends == self.drop:
                        self.dropped = orjson.loads(payload)
                        continue
                await sink.send_all(wire)
        scope.cancel()


def _whole_frame(buffer: bytes) -> tuple[int, bytes] | None:
    """``(size, payload)`` of the unmasked frame at the start of ``buffer``, once complete."""
    if len(buffer) < 2:
        return None
    length, header = buffer[1] & 0x7F, 2
    if length == 126:
        if len(buffer) < 4:
            return None
        length, header = struct.unpack("!H", buffer[2:4])[0], 4
    elif length == 127:
        if len(buffer) < 10:
            return None
        length, header = struct.unpack("!Q", buffer[2:10])[0], 10
    if len(buffer) < header + length:
        return None
    return header + length, buffer[header : header + length]


async def whole_window_now(service: RunningService) -> JSON:
    """The window as a new subscriber gets it: the service's, from memory."""
    async with connect(f"ws://127.0.0.1:{service.websocket.port}/ws") as ws:
        await send_json(ws, {"type": "subscribe", "topics": ["history"]})
        with trio.fail_after(10):
            while True:
                message = await next_message(ws)
                if message["type"] == "metrics_update" and message["topic"] == "history":
                    return message


async def updates_until(client: Any, seq: int, seen: dict[int, MetricsUpdate]) -> None:
    with trio.fail_after(15):
        async for update in client:
            seen[update.seq] = update
            if update.seq >= seq:
                return


async def test_the_client_delivers_the_services_window_after_every_append(
    start_service: StartService, tmp_path: Path
) -> None:
    service = await start_service(
        topics_file=topics_file(tmp_path), broadcast_interval_ms=200, default_topics=""
    )
    url = f"ws://127.0.0.1:{service.websocket.port}/ws"
    seen: dict[int, MetricsUpdate] = {}
    async with open_client(url, ["history"]) as client:
        await updates_until(client, 6, seen)
        first = seen[min(seen)]
        assert first["type"] == "metrics_update"
        assert is_window(first.data)
        fresh = await whole_window_now(service)
        await updates_until(client, fresh["seq"], seen)
    assert seen[fresh["seq"]].data == fresh["data"]
    for update in seen.values():
        assert is_window(update.data)
        assert update.stale is False
        [series] = update.data["series"]
        times = [row[0] for row in series["values"]]
        assert times == sorted(set(times))
        assert times[0] >= update.data["from"]


async def test_a_lost_append_brings_a_snapshot_and_the_window_goes_on(
    start_service: StartService,
    tmp_path: Path,
    nursery: trio.Nursery,
    caplog: pytest.LogCaptureFixture,
) -> None:
    service = await start_service(
        topics_file=topics_file(tmp_path), broadcast_interval_ms=200, default_topics=""
    )
    link = LossyLink(service.websocket.port, drop=2)
    port = await nursery.start(link.serve)
    seen: dict[int, MetricsUpdate] = {}
    caplog.set_level(logging.INFO, logger="broadcaster.client.loop")
    async with open_client(f"ws://127.0.0.1:{port}/ws", ["history"]) as client:
        await updates_until(client, 8, seen)
        assert link.dropped is not None
        lost = link.dropped["seq"]
        fresh = await whole_window_now(service)
        await updates_until(client, fresh["seq"], seen)
    assert lost not in seen
    # The append after the lost one was not merged: the snapshot came instead, whole.
    after = min(seq for seq in seen if seq > lost)
    assert seen[after]["type"] == "metrics_update"
    assert "gap in the seq of window topic 'history'" in caplog.text
    assert seen[fresh["seq"]].data == fresh["data"]


async def test_latency_history_from_a_real_influxd_a_new_point_reaches_the_client(
    start_service_on_influxd: StartServiceOnInfluxd, influxd: Influxd, influx_db: str
) -> None:
    influxd.write(influx_db, an_hour_of_points(int(time.time() * 1000)))
    service = await start_service_on_influxd(broadcast_interval_ms=500, default_topics="")
    url = f"ws://127.0.0.1:{service.websocket.port}/ws"
    async with open_client(url, ["latency-history"]) as client:
        with trio.fail_after(15):
            first = await client.__anext__()
            assert first["type"] == "metrics_update"
            regions = {s["tags"]["region"]: s["values"] for s in first.data["series"]}
            assert sorted(regions) == ["eu-west", "us-east"]
            assert all(355 <= len(rows) <= 361 for rows in regions.values())
            point_ms = int(time.time() * 1000)
            influxd.write(
                influx_db,
                f"pop_metrics,pop=fra1,region=eu-west latency_ms=999,up=1i {point_ms * 10**6}\n",
            )
            async for update in client:
                [eu_west] = [s for s in update.data["series"] if s["tags"]["region"] == "eu-west"]
                newest = eu_west["values"][-1]
                if newest[0] == point_ms // 10_000 * 10_000 and newest[2] == 999:
                    break
    assert update.seq > first.seq
    assert len(eu_west["values"]) >= len(regions["eu-west"])
