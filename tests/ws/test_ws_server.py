"""The WebSocket server's handshake over real loopback sockets: what it accepts, what it
refuses with which HTTP answer, and that a bad or silent client costs nobody else anything.

The hub is the in-memory one of tests/fakes.py; the database plays no part here.
"""

from __future__ import annotations

import socket
from functools import partial

import pytest
import trio

from broadcaster.ws import server as ws_server
from broadcaster.ws.server import WebSocketEndpoint, serve_websockets
from tests.fakes import PolicyHub
from tests.wsclient import connect, next_message

UPGRADE = (
    "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    "User-Agent: handshake-test/1\r\n{extra}\r\n"
)


def exchange(port: int, request: bytes) -> bytes:
    """Send ``request`` and read the answer until the server closes or stops writing."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
                if answer.startswith(b"HTTP/1.1 101") and b"\r\n\r\n" in answer:
                    break
        except TimeoutError:
            pass
        return answer


async def answer_to(endpoint: WebSocketEndpoint, request: str) -> bytes:
    return await trio.to_thread.run_sync(exchange, endpoint.port, request.encode())


async def still_serves(endpoint: WebSocketEndpoint) -> None:
    async with connect(endpoint.url) as ws:
        assert (await next_message(ws))["type"] == "welcome"


async def test_upgrade_on_ws_is_accepted_with_no_extension(
    endpoint: WebSocketEndpoint, hub: PolicyHub
) -> None:
    offer = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    answer = await answer_to(endpoint, UPGRADE.format(path="/ws?dashboard=noc", extra=offer))
    head = answer.split(b"\r\n\r\n", 1)[0].lower()
    assert head.startswith(b"http/1.1 101")
    # One frame serves every client only if nobody's frames are compressed per connection.
    assert b"sec-websocket-extensions" not in head


async def test_client_info_comes_from_the_handshake(
    endpoint: WebSocketEndpoint, hub: PolicyHub
) -> None:
    async with connect(endpoint.url, extra_headers=[("User-Agent", "noc-wall/2")]) as ws:
        await next_message(ws)
        (connection,) = hub.connections_now()
        assert connection.client_info.user_agent == "noc-wall/2"
        assert connection.client_info.ip == "127.0.0.1"


async def test_other_paths_get_404(endpoint: WebSocketEndpoint) -> None:
    answer = await answer_to(endpoint, UPGRADE.format(path="/socket", extra=""))
    assert answer.startswith(b"HTTP/1.1 404")
    assert answer.endswith(b"WebSocket endpoint is /ws\n")
    await still_serves(endpoint)


@pytest.mark.parametrize(
    "request_text",
    [
        "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",  # plain HTTP, no upgrade
        "POST /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n",
        "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 tls hello\r\n\r\n",  # TLS to a ws:// port
    ],
    ids=["no-upgrade", "post", "not-http"],
)
async def test_requests_that_are_not_upgrades_get_400(
    endpoint: WebSocketEndpoint, hub: PolicyHub, request_text: str
) -> None:
    answer = await answer_to(endpoint, request_text)
    assert answer.startswith(b"HTTP/1.1 4"), answer
    assert hub.counters.connections_created == 0
    await still_serves(endpoint)


async def test_a_silent_client_is_dropped_after_the_handshake_timeout(
    nursery: trio.Nursery, hub: PolicyHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ws_server, "HANDSHAKE_TIMEOUT_S", 0.2)
    endpoint: WebSocketEndpoint = await nursery.start(
        partial(serve_websockets, hub, hub.policy, "127.0.0.1", 0)
    )
    silent = trio.socket.socket()
    await silent.connect(("127.0.0.1", endpoint.port))
    with silent, trio.fail_after(5):
        assert await silent.recv(1) == b""  # closed by the server, no answer
    await still_serves(endpoint)
    assert hub.counters.connections_created == 1  # only the good one
