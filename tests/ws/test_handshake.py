"""The opening handshake over real loopback sockets: every request the server must refuse
gets an HTTP answer the client can read in full, and serving goes on for everyone else.

Each refused request is one that once ended the whole process (a non-ASCII byte in a comma
list, an IDNA host) or was wrongly upgraded (HTTP/1.0, a key that is not 16 bytes). After
each one a normal client must still connect and get ``welcome``. The rules themselves are
tested without sockets in tests/ws/test_handshake_rules.py (with the lingering close in virtual
time) and tests/ws/test_handshake_properties.py. This module imports nothing of the new
handshake, so that it also runs against the code before it.

The hub is the in-memory one of tests/fakes.py; the database plays no part here.
"""

from __future__ import annotations

import base64
import socket
from dataclasses import dataclass

import orjson
import pytest
import trio
from wsproto import ConnectionType
from wsproto.connection import Connection as WsConnection
from wsproto.events import TextMessage

from broadcaster.ws.server import WebSocketEndpoint
from tests.fakes import PolicyHub
from tests.handshake_requests import upgrade
from tests.wsclient import connect, next_message


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[bytes, bytes]
    body: bytes


def exchange(port: int, request: bytes) -> Answer:
    """Send ``request``; read the answer: a 101's head, or everything up to the server's EOF.

    Blocking socket (run it in a thread). A reset raises ConnectionResetError: the test
    fails, as a client would have lost the answer.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
            if received.startswith(b"HTTP/1.1 101") and b"\r\n\r\n" in received:
                break
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *lines = head.split(b"\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return Answer(int(status_line.split()[1]), headers, body)


async def answer_to(endpoint: WebSocketEndpoint, request: bytes) -> Answer:
    return await trio.to_thread.run_sync(exchange, endpoint.port, request)


async def still_serves(endpoint: WebSocketEndpoint, hub: PolicyHub) -> None:
    """A normal client still gets ``welcome``; and the answer before came from the rules, not
    from the containment boundary catching an exception (which also answers 400)."""
    assert hub.containment.counts()["handshake"] == 0
    async with connect(endpoint.url) as ws:
        assert (await next_message(ws))["type"] == "welcome"


def assert_readable_rejection(answer: Answer, status: int) -> None:
    assert answer.status == status, answer
    assert int(answer.headers[b"content-length"]) == len(answer.body) > 0
    assert b"close" in answer.headers[b"connection"].lower()


# Each of these made wsproto raise (UnicodeDecodeError, UnicodeError, IndexError), which
# ended serve_websockets and with it the process (exit code 1).
CRASHERS = {
    "connection-non-ascii": (upgrade(Connection=b"Upgrade\xff"), 400),
    "extensions-non-ascii": (upgrade(Sec_WebSocket_Extensions=b"\xe9"), 400),
    "protocol-non-ascii": (upgrade(Sec_WebSocket_Protocol=b"\xe9"), 400),
    "host-bad-punycode": (upgrade(Host=b"xn--zz"), 101),  # a valid reg-name: not decoded
    "host-non-ascii": (upgrade(Host=b"\xe9t\xe9"), 400),
}


@pytest.mark.parametrize(("request_bytes", "status"), CRASHERS.values(), ids=CRASHERS.keys())
async def test_requests_that_crashed_the_server_are_answered(
    endpoint: WebSocketEndpoint, hub: PolicyHub, request_bytes: bytes, status: int
) -> None:
    answer = await answer_to(endpoint, request_bytes)
    if status == 101:
        assert answer.status == 101, answer
    else:
        assert_readable_rejection(answer, status)
    await still_serves(endpoint, hub)


# Each of these got 101 although RFC 6455 4.2.1 requires a refusal.
WRONGLY_UPGRADED = {
    "http-1.0": upgrade(line=b"GET /ws HTTP/1.0"),
    "key-not-base64": upgrade(Sec_WebSocket_Key=b"this is no base64 key!!!"),
    "key-15-bytes": upgrade(Sec_WebSocket_Key=base64.b64encode(b"k" * 15)),
    "key-17-bytes": upgrade(Sec_WebSocket_Key=base64.b64encode(b"k" * 17)),
}


@pytest.mark.parametrize("request_bytes", WRONGLY_UPGRADED.values(), ids=WRONGLY_UPGRADED.keys())
async def test_invalid_upgrades_get_400(
    endpoint: WebSocketEndpoint, hub: PolicyHub, request_bytes: bytes
) -> None:
    assert_readable_rejection(await answer_to(endpoint, request_bytes), 400)
    assert hub.counters.connections_created == 0
    await still_serves(endpoint, hub)


async def test_another_version_gets_426_naming_13(
    endpoint: WebSocketEndpoint, hub: PolicyHub
) -> None:
    answer = await answer_to(endpoint, upgrade(Sec_WebSocket_Version=b"8"))
    assert_readable_rejection(answer, 426)
    assert answer.headers[b"sec-websocket-version"] == b"13"
    await still_serves(endpoint, hub)


async def test_an_oversized_head_gets_431_that_the_client_reads_in_full(
    endpoint: WebSocketEndpoint, hub: PolicyHub
) -> None:
    # 40 kB, 2.5 times the cap: the server stops reading long before the end, so without
    # the lingering close the client's unread bytes would make the kernel reset the connection.
    answer = await answer_to(endpoint, upgrade(padding_bytes=40_000))
    assert_readable_rejection(answer, 431)
    await still_serves(endpoint, hub)


async def test_the_accepted_answer(endpoint: WebSocketEndpoint, hub: PolicyHub) -> None:
    offer = b"permessage-deflate; client_max_window_bits"
    answer = await answer_to(
        endpoint, upgrade(Sec_WebSocket_Extensions=offer, Sec_WebSocket_Protocol=b"chat")
    )
    assert answer.status == 101
    assert answer.headers[b"sec-websocket-accept"] == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert answer.headers[b"upgrade"].lower() == b"websocket"
    # One frame serves every client only if nobody's frames are compressed per connection.
    assert b"sec-websocket-extensions" not in answer.headers
    assert b"sec-websocket-protocol" not in answer.headers


def pipelined_pings(port: int, first_id: int, then_id: int | None) -> list[dict[str, object]]:
    """Upgrade and send a ping frame in the same write, without waiting for the 101; then,
    if ``then_id``, another ping once the 101 is in. Returns the messages up to the last pong
    (or what came within 1 s)."""
    client = WsConnection(ConnectionType.CLIENT)

    def ping(ping_id: int) -> bytes:
        return client.send(TextMessage(orjson.dumps({"type": "ping", "id": ping_id}).decode()))

    with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
        sock.sendall(upgrade() + ping(first_id))
        received = b""
        while b"\r\n\r\n" not in received:
            received += sock.recv(65536)
        assert received.startswith(b"HTTP/1.1 101"), received
        client.receive_data(received.partition(b"\r\n\r\n")[2])
        if then_id is not None:
            sock.sendall(ping(then_id))
        messages: list[dict[str, object]] = []
        try:
            while not messages or messages[-1].get("id") != (then_id or first_id):
                client.receive_data(sock.recv(65536))
                messages += [
                    orjson.loads(e.data) for e in client.events() if isinstance(e, TextMessage)
                ]
        except TimeoutError:
            pass
        return messages


async def test_a_frame_sent_right_behind_the_request_is_not_lost(
    endpoint: WebSocketEndpoint, hub: PolicyHub
) -> None:
    messages = await trio.to_thread.run_sync(pipelined_pings, endpoint.port, 7, 8)
    assert [m["type"] for m in messages] == ["welcome", "pong", "pong"]
    assert [m.get("id") for m in messages[1:]] == [7, 8]  # the pipelined one first
    await still_serves(endpoint, hub)


async def test_a_frame_sent_right_behind_the_request_is_answered_at_once(
    endpoint: WebSocketEndpoint,
) -> None:
    messages = await trio.to_thread.run_sync(pipelined_pings, endpoint.port, 7, None)
    assert [m["type"] for m in messages] == ["welcome", "pong"]
