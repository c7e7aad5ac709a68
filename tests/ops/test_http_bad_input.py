"""Hostile HTTP requests against the real service over loopback: each gets its exact 4xx, never
a 500 for the client's fault, never a file from outside ``broadcaster/static``, and the service
goes on serving. An unexpected error in a route is logged with its traceback and answered 500.

Raw bytes over a TCP socket, since HTTP clients refuse to send most of these. The service runs
on an in-process source (``start_service``): this is the HTTP side; nothing is queried.
"""

from __future__ import annotations

import pytest
import structlog
import trio
from structlog.testing import capture_logs

from broadcaster.service import RunningService
from tests.services import StartService


def get(target: bytes, *headers: bytes, host: bytes | None = b"127.0.0.1") -> bytes:
    """A GET request head for ``target``, with a Host header unless ``host`` is None."""
    lines = [b"GET " + target + b" HTTP/1.1"]
    if host is not None:
        lines.append(b"Host: " + host)
    return b"\r\n".join([*lines, *headers, b"", b""])


HOSTILE_REQUESTS = {
    # Host headers: RFC 9112 3.2 requires 400 for a missing, repeated or invalid one.
    "non-ASCII Host": (get(b"/api/client-config", host="déjà.example".encode()), 400),
    "Latin-1 bytes in Host": (get(b"/api/client-config", host=b"\xff\xfe"), 400),
    "Host with unbalanced [": (get(b"/api/client-config", host=b"[::1"), 400),
    "Host with unbalanced ]": (get(b"/api/client-config", host=b"::1]:8080"), 400),
    "Host with a bad IPv6 literal": (get(b"/api/client-config", host=b"[zz::1]"), 400),
    "Host with a space": (get(b"/api/client-config", host=b"a b"), 400),
    "Host with userinfo": (get(b"/api/client-config", host=b"user@evil.example"), 400),
    "Host with markup": (get(b"/api/client-config", host=b"bad host<script>"), 400),
    "Host with NUL": (get(b"/api/client-config", host=b"a\x00b"), 400),
    "invalid Host on /health": (get(b"/health", host=b"[::1"), 400),
    # Werkzeug's IDNA codec raised on it (a 500); the fuzzer found it (case 20260101:526).
    "Host label over 63 characters": (get(b"/health", host=b"a" * 64), 400),
    "Host port over 65535": (get(b"/health", host=b"127.0.0.1:65536"), 400),
    "two Host headers": (get(b"/", b"Host: other.example"), 400),
    "no Host": (get(b"/", host=None), 400),
    # Percent-encoding that decodes to nothing valid.
    "bad %-escape": (get(b"/static/%zz.js"), 404),
    "%-escape of invalid UTF-8": (get(b"/static/%ff%fe.js"), 404),
    "truncated %-escape": (get(b"/static/a%2"), 404),
    "bad %-escape on /health": (get(b"/health%zz"), 404),
    # Paths out of broadcaster/static.
    "../ out of static": (get(b"/static/../../etc/passwd"), 404),
    "%2e%2e out of static": (get(b"/static/%2e%2e/%2e%2e/etc/passwd"), 404),
    "..%2f out of static": (get(b"/static/..%2f..%2fetc%2fpasswd"), 404),
    "absolute path": (get(b"/static//etc/passwd"), 404),
    "%2f absolute path": (get(b"/static/%2fetc%2fpasswd"), 404),
    "backslashes": (get(b"/static/..\\..\\http.py"), 404),
    "%00 before a static suffix": (get(b"/static/..%2f..%2fetc%2fpasswd%00.js"), 404),
    # NUL bytes.
    "NUL in the path": (get(b"/static/a\x00.js"), 400),
    "%00 in the path": (get(b"/static/dashboard.js%00"), 404),
    "NUL in a header": (get(b"/", b"X-Note: a\x00b"), 400),
    # Sizes.
    "100 KB header": (get(b"/", b"X-Big: " + b"a" * 100_000), 431),
    "10,000 headers": (get(b"/", *(b"X-%d: v" % n for n in range(10_000))), 431),
    "100 KB URL": (get(b"/static/" + b"a" * 100_000 + b".js"), 431),
    "8 KB static file name": (get(b"/static/" + b"a" * 8000 + b".js"), 404),
    "file name over 255 bytes": (get(b"/static/" + b"%C3%A9" * 200 + b".js"), 404),
    # Methods.
    "unknown method": (b"BREW / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 405),
    "POST /health": (b"POST /health HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n", 405),
    "DELETE a static file": (
        b"DELETE /static/dashboard.js HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        405,
    ),
    "method with a bad character": (b"G(T / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 400),
    # Content on GET: no route takes any.
    "GET with a body": (get(b"/health", b"Content-Length: 5") + b"hello", 400),
    "GET with a chunked body": (
        get(b"/api/client-config", b"Transfer-Encoding: chunked") + b"5\r\nhello\r\n0\r\n\r\n",
        400,
    ),
    "GET with Content-Length and chunked": (
        get(b"/", b"Content-Length: 3", b"Transfer-Encoding: chunked") + b"0\r\n\r\n",
        400,
    ),
    "bad Content-Length": (get(b"/", b"Content-Length: abc"), 400),
    # Not HTTP/1.1 at all.
    "TLS hello": (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),
    "HTTP/0.9": (b"GET /\r\n\r\n", 400),
}

# Requests that look odd but are valid, and get their normal answer.
VALID_REQUESTS = {
    "IPv6 Host with port": (get(b"/api/client-config", host=b"[::1]:8080"), 200),
    "empty Host": (get(b"/api/client-config", host=b""), 200),
    "unusual but valid Host": (get(b"/api/client-config", host=b"odd!name"), 200),
    "GET with Content-Length 0": (get(b"/api/client-config", b"Content-Length: 0"), 200),
    "bad %-escape in an unread query": (get(b"/api/client-config?a=%zz"), 200),
}


@pytest.fixture
async def service(start_service: StartService) -> RunningService:
    return await start_service()


def http_port(service: RunningService) -> int:
    return int(service.http_url.rsplit(":", 1)[1])


async def exchange(port: int, request: bytes) -> tuple[int, bytes]:
    """Send raw ``request`` on a new connection; the response's status and body."""
    with trio.fail_after(10):
        async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
            await stream.send_all(request)
            received = b""
            while b"\r\n\r\n" not in received:
                chunk = await stream.receive_some(65536)
                assert chunk, f"connection closed without a response: {received!r}"
                received += chunk
            head, body = received.split(b"\r\n\r\n", 1)
            length = next(
                (
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")[1:]
                    if line.lower().startswith(b"content-length:")
                ),
                0,
            )
            while len(body) < length:
                chunk = await stream.receive_some(65536)
                assert chunk, "connection closed in the middle of the body"
                body += chunk
    return int(head.split(b" ", 2)[1]), body


@pytest.mark.parametrize(
    ("request_bytes", "status"), HOSTILE_REQUESTS.values(), ids=HOSTILE_REQUESTS
)
async def test_hostile_request_gets_its_4xx(
    service: RunningService, request_bytes: bytes, status: int
) -> None:
    with capture_logs() as logs:
        code, body = await exchange(http_port(service), request_bytes)
    assert code == status
    assert b"root:" not in body  # /etc/passwd
    assert b"import " not in body  # a Python file
    assert [entry for entry in logs if entry["log_level"] == "error"] == []


@pytest.mark.parametrize(("request_bytes", "status"), VALID_REQUESTS.values(), ids=VALID_REQUESTS)
async def test_odd_but_valid_request_is_answered(
    service: RunningService, request_bytes: bytes, status: int
) -> None:
    code, _ = await exchange(http_port(service), request_bytes)
    assert code == status


async def test_service_goes_on_after_a_flood_of_hostile_requests(service: RunningService) -> None:
    port = http_port(service)
    codes: list[int] = []

    async def send(request: bytes) -> None:
        codes.append((await exchange(port, request))[0])

    async with trio.open_nursery() as nursery:
        for request, _ in HOSTILE_REQUESTS.values():
            nursery.start_soon(send, request)
    assert sorted(codes) == sorted(status for _, status in HOSTILE_REQUESTS.values())
    assert (await exchange(port, get(b"/api/client-config")))[0] == 200
    assert (await exchange(port, get(b"/static/dashboard.js")))[0] == 200


async def test_unexpected_route_error_is_logged_and_answered_500(
    service: RunningService, monkeypatch: pytest.MonkeyPatch
) -> None:
    def subscriber_counts() -> dict[str, int]:
        raise RuntimeError("status is broken")  # a bug, not a bad request

    monkeypatch.setattr(service.hub, "subscriber_counts", subscriber_counts)
    port = http_port(service)
    codes: dict[str, int] = {}

    async def send(target: bytes) -> None:
        codes[target.decode()] = (await exchange(port, get(target)))[0]

    with capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send, b"/api/websocket/status")
            nursery.start_soon(send, b"/api/client-config")
            nursery.start_soon(send, b"/static/dashboard.js")
    assert codes == {
        "/api/websocket/status": 500,
        "/api/client-config": 200,
        "/static/dashboard.js": 200,
    }
    (failure,) = [entry for entry in logs if entry["log_level"] == "error"]
    assert failure["event"] == "HTTP request failed"
    assert (failure["method"], failure["path"]) == ("GET", "/api/websocket/status")
    rendered = structlog.processors.format_exc_info(None, "error", dict(failure))
    assert rendered["exception"].startswith("Traceback (most recent call last):")
    assert rendered["exception"].endswith("RuntimeError: status is broken")
    assert (await exchange(port, get(b"/api/client-config")))[0] == 200
