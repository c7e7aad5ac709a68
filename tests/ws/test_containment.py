"""Containment: an unforeseen error while serving one client ends that client, nothing more.

The boundary itself is tested directly. Then each stage is made to fail by a fault put into
the code for the test (a method replaced with one that raises): once the defects that real
input used to reach are fixed, no known input raises there, and the boundary must still hold
for the next unknown one. The fuzz tests (tests/test_fuzz_service.py) send real hostile
input to a real process.
"""

from __future__ import annotations

import socket
from functools import partial
from typing import Any, NoReturn

import httpx
import pytest
import structlog
import trio
import trio.testing
from hypercorn.trio.tcp_server import TCPServer
from wsproto.events import Pong, TextMessage

from broadcaster.broadcast.loop import BroadcastLoop
from broadcaster.broadcast.topics import Topic
from broadcaster.channels import Channel
from broadcaster.containment import Containment, Stage
from broadcaster.protocol import CloseCode
from broadcaster.sources.base import StatementResult
from broadcaster.sources.health import SourceHealth
from broadcaster.ws import server as ws_server
from broadcaster.ws.heartbeat import sweep_once
from broadcaster.ws.outbound import Outbound
from broadcaster.ws.server import WebSocketEndpoint
from tests.fakes import (
    FakeSource,
    PolicyHub,
    VirtualWallClock,
    make_hub,
    make_topics,
    open_connection,
    sent_messages,
)
from tests.services import StartService
from tests.ws.test_connection import served, update
from tests.wsclient import connect, next_message


class Boom(RuntimeError):
    """The fault put into the code under test."""


def boom(*args: Any, **kwargs: Any) -> NoReturn:
    raise Boom("fault injected by the test")


def no_failures_but(containment: Containment, **expected: int) -> dict[str, int]:
    return {stage.value: expected.get(stage.value, 0) for stage in Stage}


# --- the boundary ------------------------------------------------------------------------------


def test_an_exception_is_logged_counted_and_ends_only_through_on_failure() -> None:
    containment = Containment()
    ended: list[str] = []
    with (
        structlog.testing.capture_logs() as logs,
        containment.boundary(
            Stage.HANDLER,
            connection_id="ws_7",
            address="127.0.0.9",
            on_failure=lambda: ended.append("x"),
        ),
    ):
        raise Boom("bad")
    assert ended == ["x"]
    assert containment.counts() == no_failures_but(containment, handler=1)
    (line,) = logs
    assert line["log_level"] == "error"
    assert line["event"] == "connection failed"
    assert (line["stage"], line["connection_id"], line["ip"]) == ("handler", "ws_7", "127.0.0.9")
    assert isinstance(line["exc_info"], Boom)


async def test_cancellation_passes_through_untouched() -> None:
    containment = Containment()
    ended: list[str] = []
    with trio.CancelScope() as scope:
        scope.cancel()
        with containment.boundary(
            Stage.READER, connection_id=None, address=None, on_failure=lambda: ended.append("x")
        ):
            await trio.sleep(1)
    assert scope.cancelled_caught
    assert ended == []
    assert containment.counts() == no_failures_but(containment)


def test_from_a_group_the_exceptions_are_contained_and_the_rest_goes_on() -> None:
    containment = Containment()
    with (
        pytest.raises(BaseExceptionGroup) as raised,
        containment.boundary(
            Stage.READER, connection_id=None, address=None, on_failure=lambda: None
        ),
    ):
        raise BaseExceptionGroup("both", [Boom("bad"), KeyboardInterrupt()])
    assert [type(e) for e in raised.value.exceptions] == [KeyboardInterrupt]
    assert containment.counts()["reader"] == 1


def test_a_failing_on_failure_is_contained_too() -> None:
    containment = Containment()
    with containment.boundary(Stage.FLUSHER, connection_id=None, address=None, on_failure=boom):
        raise Boom("bad")
    assert containment.counts()["flusher"] == 2


# --- each stage of one connection, over a real socket ------------------------------------------


async def test_a_handler_error_closes_that_client_with_1011_and_no_other(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hub = make_hub(["a"], defaults=["a"])
    async with served(hub) as (victim, peer, victim_done), served(hub) as (_, bystander, _):
        await peer.read_until(lambda: peer.messages)
        await bystander.read_until(lambda: bystander.messages)
        monkeypatch.setattr(hub, "subscribe", boom)
        await peer.send(TextMessage('{"type":"subscribe","topics":["a"]}'))
        await peer.read_until(lambda: peer.closed is not None)
        with trio.fail_after(5):
            await victim_done.wait()  # a normal close handshake: the reader was still there
        hub.publish(Channel("a", None), update("a", 1))
        await bystander.send(TextMessage('{"type":"ping","id":1}'))
        await bystander.read_until(lambda: any(m["type"] == "pong" for m in bystander.messages))
    assert peer.closed is not None
    assert (peer.closed.code, peer.closed.reason) == (CloseCode.INTERNAL_ERROR, "internal error")
    assert victim.close_code == CloseCode.INTERNAL_ERROR
    assert bystander.updates("a") == [1]
    assert bystander.closed is None
    assert hub.containment.counts() == no_failures_but(hub.containment, handler=1)


async def test_a_reader_error_sends_1011_before_the_socket_closes() -> None:
    hub = make_hub(["a"])
    async with served(hub) as (victim, peer, victim_done):
        await peer.read_until(lambda: peer.messages)
        victim._on_pong = boom  # type: ignore[method-assign]
        await peer.send(Pong(b"unsolicited"))
        await peer.read_until(lambda: peer.closed is not None)
        with trio.fail_after(5):
            await victim_done.wait()
    assert peer.closed is not None
    assert peer.closed.code == CloseCode.INTERNAL_ERROR
    assert hub.containment.counts() == no_failures_but(hub.containment, reader=1)
    assert not hub.tracked_count()


async def test_a_flusher_error_cuts_that_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    hub = make_hub(["a"], defaults=["a"], outbox=10_000, max_pending_bytes=1 << 26)
    async with served(hub, small_buffers=True) as (victim, peer, victim_done):
        await peer.read_until(lambda: peer.messages)
        monkeypatch.setattr(Outbound, "_write_queued", boom)
        for seq in range(1, 50):
            hub.publish(
                Channel("a", None), update("a", seq, pad_bytes=50_000)
            )  # more than the socket takes
        with trio.fail_after(5):
            await victim_done.wait()
    assert victim.close_code == CloseCode.INTERNAL_ERROR
    assert hub.containment.counts() == no_failures_but(hub.containment, flusher=1)
    assert not hub.tracked_count()


async def test_a_heartbeat_error_cuts_that_connection_and_the_sweep_goes_on() -> None:
    hub = make_hub(["a"])
    victim, other = open_connection(hub), open_connection(hub)
    victim.request_ping = boom  # type: ignore[method-assign]
    sweep_once(hub, connection_timeout_s=45, ping_timeout_s=45)
    assert victim.close_code == CloseCode.INTERNAL_ERROR
    assert other.close_code is None
    assert other.outbound.pending_items == 2  # its welcome, then the sweep's ping
    assert hub.containment.counts() == no_failures_but(hub.containment, heartbeat=1)


# --- the server: before the upgrade and around a connection's life ----------------------------


UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def exchange(port: int, request: bytes) -> bytes:
    """Send ``request``; read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer


async def test_a_handshake_error_answers_400_and_the_server_goes_on(
    endpoint: WebSocketEndpoint, hub: PolicyHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as patched:
        patched.setattr(ws_server, "_handshake", partial(_raise_after_reading))
        answer = await trio.to_thread.run_sync(exchange, endpoint.port, UPGRADE)
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert answer.endswith(b"\r\n\r\nbad request\n")
    assert hub.containment.counts() == no_failures_but(hub.containment, handshake=1)
    async with connect(endpoint.url) as ws:
        assert (await next_message(ws))["type"] == "welcome"


async def _raise_after_reading(stream: trio.SocketStream, *_: object) -> NoReturn:
    await stream.receive_some(65536)
    raise Boom("fault injected by the test")


async def test_an_error_registering_a_connection_closes_it_with_1011(
    endpoint: WebSocketEndpoint, hub: PolicyHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as patched:
        patched.setattr(hub, "register", boom)
        answer = await trio.to_thread.run_sync(exchange, endpoint.port, UPGRADE)
    head, frames = answer.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 101")
    assert frames[:4] == b"\x88\x10\x03\xf3"  # a close frame: 1011 and its reason
    assert frames[4:] == b"internal error"
    assert hub.containment.counts() == no_failures_but(hub.containment, lifecycle=1)
    async with connect(endpoint.url) as ws:
        assert (await next_message(ws))["type"] == "welcome"


# --- the broadcast loop: one topic's failure stays that topic's ---------------------------------


def _shape_raising(results: list[StatementResult]) -> Any:
    raise Boom("a bug in shaping")


def _shape_unencodable(results: list[StatementResult]) -> Any:
    return {"n": 2**80 + 1}  # an integer JSON cannot carry exactly: orjson refuses it


@pytest.mark.parametrize(
    ("shape", "cause"),
    [(_shape_raising, "internal_error"), (_shape_unencodable, "bad_response")],
)
async def test_a_topic_whose_value_cannot_be_built_fails_alone(
    autojump_clock: trio.testing.MockClock, shape: Any, cause: str
) -> None:
    source = FakeSource()
    hub = make_hub(["good", "bad"], defaults=["good", "bad"])
    topics = {**make_topics("good"), "bad": Topic(name="bad", query="q:bad", shape=shape)}
    health = SourceHealth(source, max_age_s=20, ping_timeout_s=5)
    loop = BroadcastLoop(
        hub, source, topics, health, interval_s=10, query_timeout_s=5, wall_clock=VirtualWallClock()
    )
    client = open_connection(hub)
    messages: list[dict[str, Any]] = []

    async def read_every_second() -> None:
        while True:
            await trio.sleep(1)
            messages.extend(sent_messages(client))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_every_second)
        with trio.move_on_after(25):
            await loop.run()
        nursery.cancel_scope.cancel()
    messages.extend(sent_messages(client))
    good = [
        m["seq"] for m in messages if m.get("topic") == "good" and m["type"] == "metrics_update"
    ]
    errors = [m for m in messages if m["type"] == "error"]
    assert good == [1, 2, 3]  # the first subscriber's refresh, then two ticks
    assert [(e["topic"], e["code"], e["cause"]) for e in errors] == [
        ("bad", "influxdb_unavailable", cause)
    ] * 3
    assert loop.states["bad"].failures == 3
    assert loop.states["bad"].seq == 3


async def test_a_topic_whose_fan_out_raises_fails_alone(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = FakeSource()
    hub = make_hub(["good", "bad"], defaults=["good", "bad"])
    publish = hub.publish

    def publish_failing_for_bad(channel: Channel, frame: Any) -> int:
        if channel.topic == "bad":
            raise Boom("a bug in the fan-out")
        return publish(channel, frame)

    monkeypatch.setattr(hub, "publish", publish_failing_for_bad)
    health = SourceHealth(source, max_age_s=20, ping_timeout_s=5)
    loop = BroadcastLoop(
        hub,
        source,
        make_topics("good", "bad"),
        health,
        interval_s=10,
        query_timeout_s=5,
        wall_clock=VirtualWallClock(),
    )
    client = open_connection(hub)
    messages: list[dict[str, Any]] = []

    async def read_every_second() -> None:
        while True:
            await trio.sleep(1)
            messages.extend(sent_messages(client))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_every_second)
        with trio.move_on_after(25):
            await loop.run()
        nursery.cancel_scope.cancel()
    good = [m["seq"] for m in messages if m.get("topic") == "good"]
    assert good == [1, 2, 3]  # the loop went on: the first refresh, then two ticks
    assert loop.states["bad"].failures == 3


# --- the HTTP port: one connection's failure inside hypercorn stays that connection's ----------


async def test_an_http_connection_error_is_contained(
    start_service: StartService, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = await start_service(default_topics="")
    async with httpx.AsyncClient() as client:
        with monkeypatch.context() as patched:
            patched.setattr(TCPServer, "_read_data", boom)
            with pytest.raises(httpx.TransportError):
                await client.get(f"{service.http_url}/health")
        assert (await client.get(f"{service.http_url}/health")).status_code == 200
    assert service.hub.containment.counts() == no_failures_but(service.hub.containment, http=1)
