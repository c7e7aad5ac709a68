"""The handshake's rules without sockets: :class:`RequestReader` and :func:`validate` are
pure, so each rule is tested on bytes; the lingering close of :func:`send_rejection` is
tested in virtual time on in-memory streams. Hypothesis tests are in
tests/ws/test_handshake_properties.py.

Answers are parsed back with h11's client side: a rejection a real client cannot frame is
a failure too.
"""

from __future__ import annotations

import base64

import h11
import pytest
import trio
import trio.testing

from broadcaster.ws import handshake
from broadcaster.ws.handshake import (
    MAX_HEAD_BYTES,
    Accept,
    Reject,
    RequestReader,
    accept_response,
    reject_response,
    validate,
)
from tests.handshake_requests import KEY, header_list, upgrade


def decide(raw: bytes, chunk_bytes: int | None = None) -> Accept | Reject | None:
    """Feed ``raw`` as the socket would (in chunks), then judge: what the server does."""
    reader = RequestReader()
    chunk_bytes = chunk_bytes or len(raw) or 1
    for start in range(0, len(raw), chunk_bytes):
        outcome = reader.feed(raw[start : start + chunk_bytes])
        if isinstance(outcome, Reject):
            return outcome
        if outcome is not None:
            return validate(outcome, path="/ws")
    return None


def status_of(raw: bytes) -> int:
    decision = decide(raw)
    assert decision is not None
    return 101 if isinstance(decision, Accept) else decision.status


# --- the rules, one example each ---------------------------------------------------------


def test_the_rfc_example_is_accepted_with_its_accept_token() -> None:
    decision = decide(upgrade())
    assert decision == Accept(b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", b"handshake-test/1")
    assert KEY == b"dGhlIHNhbXBsZSBub25jZQ=="


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (upgrade(line=b"GET /ws?dashboard=noc HTTP/1.1"), 101),
        (upgrade(line=b"GET /ws HTTP/2.0"), 101),  # "1.1 or later"
        (upgrade(Connection=b"keep-alive, Upgrade"), 101),
        (upgrade(Connection=b"keep-alive,UPGRADE ,"), 101),
        (upgrade(Upgrade=b"WebSocket"), 101),
        (upgrade(Upgrade=b"h2c, websocket"), 101),
        (upgrade(Host=b"xn--zz"), 101),
        (upgrade(Host=b"dash.example.com:8765"), 101),
        (upgrade(Host=b"10.0.0.1:0"), 101),
        (upgrade(Host=b"[::1]:8765"), 101),
        (upgrade(Host=b"[::ffff:10.0.0.1]"), 101),
        (upgrade(Host=b"caf%C3%A9.example"), 101),
        (upgrade(Content_Length=b"0"), 101),
        (upgrade(line=b"POST /ws HTTP/1.1"), 400),
        (upgrade(line=b"get /ws HTTP/1.1"), 400),
        (upgrade(line=b"GET /ws HTTP/1.0"), 400),
        (upgrade(line=b"GET /ws HTTP/0.9"), 400),
        (upgrade(Host=b""), 400),
        (upgrade(Host=b"\xe9t\xe9"), 400),
        (upgrade(Host=b"a b"), 400),
        (upgrade(Host=b"host:65536"), 400),
        (upgrade(Host=b"host:http"), 400),
        (upgrade(Host=b"[::1"), 400),
        (upgrade(Host=b"[zz::1]"), 400),
        (upgrade(Host=b"[fe80::1%25eth0]"), 400),  # zone ids: not for a server's Host
        (upgrade(Host=b"user@host"), 400),
        (upgrade(Connection=b"Upgrade\xff"), 400),
        (upgrade(Connection=b"keep-alive"), 400),
        (upgrade(Connection=b"Upgrade\x01"), 400),
        (upgrade(Upgrade=b"websocket\xe9"), 400),
        (upgrade(Upgrade=b"h2c"), 400),
        (upgrade(Sec_WebSocket_Extensions=b"\xe9"), 400),
        (upgrade(Sec_WebSocket_Protocol=b"\xe9"), 400),
        (upgrade(Content_Length=b"5") + b"hello", 400),
        (upgrade(Transfer_Encoding=b"chunked") + b"0\r\n\r\n", 400),
        (upgrade(Sec_WebSocket_Key=b"dGhlIHNhbXBsZSBub25jZQ"), 400),  # unpadded
        (upgrade(Sec_WebSocket_Key=b"dGhlIHNhbXBsZSBub25jZQ==AAAA"), 400),
        (upgrade(Sec_WebSocket_Key=base64.b64encode(b"k" * 15)), 400),
        (upgrade(Sec_WebSocket_Key=base64.b64encode(b"k" * 17)), 400),
        (upgrade(Sec_WebSocket_Key=b"dGhlIHNhbXBsZSBub25j\xe9Q=="), 400),
        (upgrade(Sec_WebSocket_Version=b"8"), 426),
        (upgrade(Sec_WebSocket_Version=b"13, 8"), 426),
        (upgrade(Sec_WebSocket_Version=b"\xe9"), 400),  # not ASCII: refused before 426
        (upgrade(line=b"GET /socket HTTP/1.1"), 404),
        (upgrade(line=b"GET /ws/ HTTP/1.1"), 404),
        (b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 400),  # plain HTTP
        (b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n", 400),  # no Host (h11)
        (upgrade().replace(b"\r\n\r\n", b"\r\nHost: other\r\n\r\n"), 400),  # two Hosts
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 tls hello\r\n\r\n", 400),
        (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", 400),
    ],
)
def test_status_by_rule(raw: bytes, status: int) -> None:
    assert status_of(raw) == status


def test_headers_missing_one_by_one_are_refused() -> None:
    for name, status in [
        (b"Upgrade", 400),
        (b"Connection", 400),
        (b"Sec-WebSocket-Key", 400),
        (b"Sec-WebSocket-Version", 426),
    ]:
        lines = [line for line in upgrade().split(b"\r\n") if not line.startswith(name + b":")]
        assert status_of(b"\r\n".join(lines)) == status, name


def test_two_keys_are_refused() -> None:
    raw = upgrade().replace(b"\r\n\r\n", b"\r\nSec-WebSocket-Key: " + KEY + b"\r\n\r\n")
    assert status_of(raw) == 400


def test_a_head_of_exactly_the_cap_is_read_and_one_byte_more_gets_431() -> None:
    base = len(upgrade(padding_bytes=1)) - 1
    at_cap = upgrade(padding_bytes=MAX_HEAD_BYTES - base)
    assert len(at_cap) == MAX_HEAD_BYTES
    over = upgrade(padding_bytes=MAX_HEAD_BYTES - base + 1)
    for chunk_bytes in (None, 1000, 16384):
        assert isinstance(decide(at_cap, chunk_bytes), Accept)
        assert decide(over, chunk_bytes) == Reject(431, f"request head over {MAX_HEAD_BYTES} bytes")
    # A head that never ends is refused once it passes the cap, not when it ends.
    reader = RequestReader()
    start = b"GET /ws HTTP/1.1\r\nX: "
    assert reader.feed(start + b"x" * (MAX_HEAD_BYTES - len(start))) is None
    outcome = reader.feed(b"x")
    assert isinstance(outcome, Reject)
    assert outcome.status == 431


def test_what_follows_the_head_is_handed_on() -> None:
    frame = b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"  # RFC 6455's masked "Hello"
    reader = RequestReader()
    request = reader.feed(upgrade() + frame)
    assert isinstance(request, h11.Request)
    assert isinstance(validate(request, path="/ws"), Accept)
    assert reader.trailing_data() == frame


def test_the_426_names_version_13_and_the_upgrade() -> None:
    decision = decide(upgrade(Sec_WebSocket_Version=b"7"))
    assert isinstance(decision, Reject)
    response = parse_response(reject_response(decision))
    assert response.status_code == 426
    assert (b"sec-websocket-version", b"13") in response.headers
    assert (b"upgrade", b"websocket") in response.headers


def test_the_404_keeps_its_plain_body() -> None:
    decision = decide(upgrade(line=b"GET /socket HTTP/1.1"))
    assert isinstance(decision, Reject)
    assert reject_response(decision).endswith(b"\r\n\r\nWebSocket endpoint is /ws\n")


def test_the_101_is_a_valid_switch_for_h11s_client() -> None:
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/ws", headers=header_list(upgrade())))
    client.send(h11.EndOfMessage())
    decision = decide(upgrade())
    assert isinstance(decision, Accept)
    client.receive_data(accept_response(decision))
    event = client.next_event()
    assert isinstance(event, h11.InformationalResponse)
    assert event.status_code == 101
    assert (b"sec-websocket-accept", b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") in event.headers
    assert client.our_state is h11.SWITCHED_PROTOCOL


def parse_response(raw: bytes) -> h11.Response:
    """``raw`` read by h11's client side: fails unless it is one framed response and body."""
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/ws", headers=[("Host", "x")]))
    client.send(h11.EndOfMessage())
    client.receive_data(raw)
    client.receive_data(b"")  # our EOF: the body must end by its Content-Length, not by this
    response = client.next_event()
    assert isinstance(response, h11.Response)
    body = b""
    while isinstance(event := client.next_event(), h11.Data):
        body += event.data
    assert isinstance(event, h11.EndOfMessage)
    assert (b"content-length", str(len(body)).encode()) in response.headers
    assert b"close" in dict(response.headers)[b"connection"].lower()
    return response


# --- the lingering close, in virtual time on in-memory streams ---------------------------

REJECTION = Reject(400, "test")


async def test_linger_ends_when_the_client_closes(autojump_clock: trio.testing.MockClock) -> None:
    server, client = trio.testing.memory_stream_pair()
    await client.send_all(b"leftovers")
    await client.send_eof()
    started = trio.current_time()
    await handshake.send_rejection(server, REJECTION)
    assert trio.current_time() == started
    assert await client.receive_some() == reject_response(REJECTION)
    assert await client.receive_some() == b""  # our EOF: the answer is complete


async def test_linger_is_bounded_in_time(autojump_clock: trio.testing.MockClock) -> None:
    server, _client = trio.testing.memory_stream_pair()  # a client that never closes
    started = trio.current_time()
    await handshake.send_rejection(server, REJECTION)
    assert trio.current_time() - started == handshake.LINGER_TIMEOUT_S


async def test_linger_is_bounded_in_bytes(autojump_clock: trio.testing.MockClock) -> None:
    server, client = trio.testing.memory_stream_pair()
    sent = 0

    async def flood() -> None:
        nonlocal sent
        while True:
            await client.send_all(b"x" * 1000)
            sent += 1000
            await trio.sleep(0.001)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(flood)
        await trio.testing.wait_all_tasks_blocked()
        started = trio.current_time()
        await handshake.send_rejection(server, REJECTION)
        nursery.cancel_scope.cancel()
    assert trio.current_time() - started < handshake.LINGER_TIMEOUT_S
    assert handshake.LINGER_MAX_BYTES <= sent < handshake.LINGER_MAX_BYTES + 2000
