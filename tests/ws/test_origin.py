"""The Origin check of the WebSocket handshake (cross-site WebSocket hijacking).

The whole service runs in-process; each handshake is sent as raw bytes over a real socket, so
the test reads the exact HTTP answer (403 before the upgrade, or 101). A property test feeds
any bytes as Origin and Host to the check as the server calls it: it never raises.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from broadcaster.auth.origins import OriginPolicy
from broadcaster.ws import handshake
from tests.handshake_requests import upgrade
from tests.services import StartService
from tests.ws.test_handshake_properties import field_value


async def answer_status(port: int, request: bytes) -> int:
    """Send ``request`` and return the status code of the server's answer."""
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(request)
            answer = b""
            while b"\r\n" not in answer:
                chunk = await stream.receive_some(4096)
                assert chunk, f"closed without an answer: {answer!r}"
                answer += chunk
    return int(answer.split(b" ", 2)[1])


def request(port: int, origin: bytes | None) -> bytes:
    changes: dict[str, Any] = {"Host": b"127.0.0.1:%d" % port}
    if origin is not None:
        changes["Origin"] = origin
    return upgrade(**changes)


@pytest.mark.parametrize(
    ("allowed_origins", "origin", "status"),
    [
        # Default: the Origin's host must be the Host's host (the dashboard's HTTP port differs).
        ("", b"http://127.0.0.1:8080", 101),
        ("", None, 101),  # not a browser
        ("", b"https://evil.example", 403),
        ("", b"null", 403),  # a sandboxed frame or a file: page
        # A list: exactly these origins.
        ("https://noc.example.com", b"https://noc.example.com", 101),
        ("https://noc.example.com", b"http://noc.example.com", 403),
        ("https://noc.example.com", b"http://127.0.0.1:8080", 403),
        ("https://noc.example.com", None, 101),
        # Anyone.
        ("*", b"https://evil.example", 101),
    ],
)
async def test_origin_decides_the_handshake(
    start_service: StartService, allowed_origins: str, origin: bytes | None, status: int
) -> None:
    service = await start_service(allowed_origins=allowed_origins)
    port = service.websocket.port
    with capture_logs() as logs:
        assert await answer_status(port, request(port, origin)) == status
    refused = [entry for entry in logs if entry["event"] == "origin refused"]
    assert service.hub.counters.origins_refused == (status == 403)
    assert len(refused) == (status == 403)
    if refused:
        assert refused[0]["origin"] == origin.decode()  # type: ignore[union-attr]
        assert refused[0]["ip"] == "127.0.0.1"
        assert refused[0]["log_level"] == "warning"


async def test_several_origin_headers_are_refused(start_service: StartService) -> None:
    service = await start_service()
    port = service.websocket.port
    raw = request(port, b"http://127.0.0.1").replace(
        b"\r\n\r\n", b"\r\nOrigin: https://evil.example\r\n\r\n"
    )
    assert await answer_status(port, raw) == 403


async def test_refused_origin_is_logged_escaped_and_truncated(start_service: StartService) -> None:
    service = await start_service()
    port = service.websocket.port
    with capture_logs() as logs:
        assert await answer_status(port, request(port, b"http://\xff\x1b[31m" + b"x" * 500)) == 403
    (entry,) = [entry for entry in logs if entry["event"] == "origin refused"]
    assert entry["origin"].startswith("http://\\xff\\x1b[31m")
    assert entry["origin"].isprintable()
    assert len(entry["origin"]) < 250


_POLICIES = [
    OriginPolicy(()),
    OriginPolicy(("*",)),
    OriginPolicy(("https://noc.example.com", "http://[::1]:8080")),
]


@given(
    origins=st.lists(st.binary(max_size=60).map(field_value), max_size=3),
    host=st.binary(max_size=40).map(field_value),
    policy=st.sampled_from(_POLICIES),
)
def test_no_origin_or_host_bytes_make_the_check_raise(
    origins: list[bytes], host: bytes, policy: OriginPolicy
) -> None:
    accept = handshake.Accept(b"token", None, host=host, origins=tuple(origins))
    decision = handshake.check_origin(accept, policy)
    assert decision is None or decision.status == 403
