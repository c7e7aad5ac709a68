"""Fuzz cases for the HTTP port (hypercorn + quart-trio): mutated requests, hostile Host
values, bad percent-encoding and traversal under /static, huge heads, bodies that lie (cut
short by an EOF, bad chunks), upgrades, the HTTP/2 preface, and random bytes.
"""

from __future__ import annotations

import random

from tests.fuzz.http_requests import (
    HTTP_TARGETS,
    Headers,
    hostile_host,
    http_get,
    request,
)
from tests.fuzz.mutate import mutate, some_bytes
from tests.fuzz.plan import Ending, Plan, chunked

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def _plan(rng: random.Random, data: bytes) -> Plan:
    ending = rng.choices((Ending.HALF_CLOSE, Ending.RESET, Ending.LINGER), weights=(70, 10, 20))
    return Plan(chunked(rng, data), ending[0])


def mutated(rng: random.Random) -> Plan:
    """A valid GET with 1-4 byte mutations."""
    return _plan(rng, mutate(rng, http_get(rng), rng.randint(1, 4)))


def host(rng: random.Random) -> Plan:
    """A hostile Host on a page that reads it (/api/client-config) or any other."""
    target = b"/api/client-config" if rng.random() < 0.6 else rng.choice(HTTP_TARGETS[:7])
    headers: Headers = [(b"Host", hostile_host(rng)), (b"Accept", b"*/*")]
    if rng.random() < 0.2:
        headers.append((b"Host", hostile_host(rng)))
    if rng.random() < 0.2:
        headers.append((b"X-Forwarded-Host", hostile_host(rng)))
    return _plan(rng, request(b"GET", target, b"HTTP/1.1", headers))


def target(rng: random.Random) -> Plan:
    """Traversal, bad percent-encoding and odd targets."""
    return _plan(rng, http_get(rng, rng.choice(HTTP_TARGETS)))


def oversized(rng: random.Random) -> Plan:
    """A head of 10-200 KB."""
    size = rng.randint(10_000, 200_000)
    headers: Headers = [(b"Host", b"127.0.0.1")]
    if rng.random() < 0.5:
        headers.append((b"X-Big", b"b" * size))
    else:
        headers += [(b"X-H" + str(i).encode(), b"v" * 40) for i in range(size // 48)]
    return _plan(rng, request(b"GET", b"/health", b"HTTP/1.1", headers))


def bodies(rng: random.Random) -> Plan:
    """Request bodies that lie: short of their Content-Length, bad or endless chunks, both
    framings at once, odd lengths; mostly followed by a half-close (EOF mid-body)."""
    method = rng.choice((b"POST", b"GET", b"PUT"))
    target = rng.choice((b"/", b"/health", b"/api/websocket/status", b"/metrics"))
    headers: Headers = [(b"Host", b"127.0.0.1")]
    style = rng.choice(("short", "short", "length", "chunked", "both", "expect"))
    if style == "short":  # fewer bytes than announced, then EOF
        announced = rng.choice((1, 5, 100, 65536, 10**9))
        headers.append((b"Content-Length", str(announced).encode()))
        body = rng.randbytes(rng.randrange(0, min(announced, 64)))
    elif style == "length":
        length = rng.choice((b"-1", b"99999999999999999999", b"1, 2", b"abc", b"", b"0x10", b"+5"))
        headers.append((b"Content-Length", length))
        body = some_bytes(rng, rng.randint(0, 20))
    elif style == "chunked":
        headers.append((b"Transfer-Encoding", rng.choice((b"chunked", b"gzip, chunked", b"x"))))
        body = rng.choice(
            (
                b"zz\r\n",
                b"ffffffffffffffffff\r\nx",
                b"5\r\nab\r\n0\r\n\r\n",
                b"0\r\n",
                b"5;ext=\xe9\r\nhello\r\n0\r\nTrailer: \xff\r\n\r\n",
                b"3\r\nabc",
                b"-1\r\n",
            )
        )
    elif style == "both":
        headers += [(b"Content-Length", b"4"), (b"Transfer-Encoding", b"chunked")]
        body = b"4\r\nabcd\r\n0\r\n\r\n"
    else:
        headers += [(b"Expect", b"100-continue"), (b"Content-Length", b"10")]
        body = b""
    data = request(method, target, b"HTTP/1.1", headers) + body
    ending = rng.choices((Ending.HALF_CLOSE, Ending.RESET, Ending.LINGER), weights=(80, 10, 10))
    return Plan(chunked(rng, data), ending[0])


def framing(rng: random.Random) -> Plan:
    """Upgrades to h2c and WebSocket, the HTTP/2 preface, pipelined requests."""
    style = rng.choice(("h2c", "websocket", "h2_preface", "pipeline"))
    if style == "h2c":
        headers: Headers = [
            (b"Host", b"127.0.0.1"),
            (b"Connection", b"Upgrade, HTTP2-Settings"),
            (b"Upgrade", b"h2c"),
            (b"HTTP2-Settings", rng.choice((b"AAMAAABkAARAAAAAAAIAAAAA", b"!!", b"\xe9"))),
        ]
        data = request(b"GET", b"/health", b"HTTP/1.1", headers) + some_bytes(rng, 64)
    elif style == "websocket":
        headers = [
            (b"Host", hostile_host(rng) if rng.random() < 0.5 else b"127.0.0.1"),
            (b"Upgrade", b"websocket"),
            (b"Connection", b"Upgrade"),
            (b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ=="),
            (b"Sec-WebSocket-Version", b"13"),
        ]
        data = request(b"GET", rng.choice((b"/", b"/ws", b"/health")), b"HTTP/1.1", headers)
    elif style == "h2_preface":
        data = H2_PREFACE + some_bytes(rng, rng.choice((0, 9, 64, 1024)))
    else:
        data = b"".join(http_get(rng) for _ in range(rng.randint(2, 20)))
    return _plan(rng, data)


def random_bytes(rng: random.Random) -> Plan:
    """Random bytes, sometimes after a request-line prefix."""
    prefix = rng.choice((b"", b"GET ", b"GET /health HTTP/1.1\r\n"))
    return _plan(rng, prefix + some_bytes(rng, rng.choice((1, 64, 4096))))
