"""HTTP/1.x requests, valid and hostile: the WebSocket upgrade and the HTTP port's requests.

Headers are (name, value) byte pairs so that any byte can go anywhere; ``request`` writes them
in order, without checking, with the line ending asked for.
"""

from __future__ import annotations

import base64
import random

Headers = list[tuple[bytes, bytes]]

# Host values that have broken HTTP stacks: IDNA/punycode that does not decode, non-ASCII,
# over-long labels, empty labels, brackets, ports that are not numbers, whitespace, NUL.
HOSTILE_HOSTS = (
    b"xn--zz",
    b"xn--",
    b"xn--a",
    b"xn--zz.example",
    b"a.xn--zz",
    b"XN--ZZ",
    b"xn--ls8h",
    b"\xe9t\xe9",
    b"caf\xc3\xa9.example",
    b"\xff",
    b"\x80\x80",
    b"a" * 64,
    b"a" * 64 + b".example",
    b"a." * 130,
    b"a..b",
    b".",
    b"..",
    b"",
    b" ",
    b"-a-",
    b"[::1]",
    b"[::1",
    b"::1]",
    b"[zz]:80",
    b"127.0.0.1:",
    b"127.0.0.1:99999999999999999999",
    b"127.0.0.1:-1",
    b"127.0.0.1:80:80",
    b"user@127.0.0.1",
    b"127.0.0.1/ws",
    b"127.0.0.1?x",
    b"127.0.0.1#x",
    b"%31%32%37.0.0.1",
    b"exa mple",
    b"a\tb",
    b"\x00",
    b"a\x00b",
)
METHODS = (
    b"GET",
    b"get",
    b"POST",
    b"HEAD",
    b"PUT",
    b"OPTIONS",
    b"CONNECT",
    b"TRACE",
    b"PRI",
    b"G\xffT",
    b"GET GET",
    b"",
    b"X" * 2000,
)
VERSIONS = (
    b"HTTP/1.1",
    b"HTTP/1.0",
    b"HTTP/0.9",
    b"HTTP/2.0",
    b"HTTP/1.2",
    b"HTTP/9.9",
    b"http/1.1",
    b"HTTP/1",
    b"HTTP/1.1.1",
    b"HTTP/01.1",
    b"",
)
WS_TARGETS = (
    b"/ws",
    b"/ws?dashboard=noc",
    b"*",
    b"http://127.0.0.1/ws",
    b"ws://127.0.0.1/ws",
    b"//ws",
    b"/ws/../ws",
    b"/ws?%zz",
    b"/ws#frag",
    b"/%77%73",
    b"/ws?" + b"a" * 5000,
    b"/" + b"a" * 10_000,
    b"/ws?\xff",
    b"/ws\x00",
    b"ws",
    b"",
)
HTTP_TARGETS = (
    b"/",
    b"/health",
    b"/metrics",
    b"/api/websocket/status",
    b"/api/client-config",
    b"/static/dashboard.js",
    b"/static/broadcaster-client.js",
    b"/static/../../etc/passwd",
    b"/static/%2e%2e/%2e%2e/etc/passwd",
    b"/static/..%2f..%2fetc%2fpasswd",
    b"/static/%c0%ae%c0%ae/etc/passwd",
    b"/static/%zz",
    b"/static/%",
    b"/static/%e9t%e9.js",
    b"/static/%00.js",
    b"/static/" + b"a" * 5000 + b".js",
    b"/static/",
    b"/static//etc/passwd",
    b"/static/dashboard.js/..",
    b"/%2e%2e/%2e%2e/",
    b"/health?%zz=%",
    b"/api/client-config?x=%ff",
    b"/static/\xe9.js",
    b"*",
    b"http://127.0.0.1/health",
    b"/" * 3000,
)


def websocket_key(rng: random.Random) -> bytes:
    """A valid Sec-WebSocket-Key: 16 random bytes, base64."""
    return base64.b64encode(rng.randbytes(16))


def upgrade_headers(rng: random.Random, host: bytes = b"127.0.0.1") -> Headers:
    """The headers of a valid upgrade, with valid variations: case, order, extras."""
    headers: Headers = [
        (b"Upgrade", rng.choice((b"websocket", b"WebSocket"))),
        (b"Connection", rng.choice((b"Upgrade", b"upgrade", b"keep-alive, Upgrade"))),
        (b"Sec-WebSocket-Key", websocket_key(rng)),
        (b"Sec-WebSocket-Version", b"13"),
    ]
    if rng.random() < 0.5:
        headers.append((b"User-Agent", b"fuzz/1 (" + str(rng.randrange(1000)).encode() + b")"))
    if rng.random() < 0.3:
        headers.append((b"Origin", b"http://127.0.0.1"))
    if rng.random() < 0.3:
        headers.append((b"Sec-WebSocket-Extensions", b"permessage-deflate; client_max_window_bits"))
    if rng.random() < 0.2:
        headers.append((b"Sec-WebSocket-Protocol", b"chat, superchat"))
    rng.shuffle(headers)
    headers.insert(0 if rng.random() < 0.8 else len(headers), (b"Host", host))
    if rng.random() < 0.2:
        headers = [(name.lower(), value) for name, value in headers]
    return headers


def request(
    method: bytes, target: bytes, version: bytes, headers: Headers, line_end: bytes = b"\r\n"
) -> bytes:
    """The request head, exactly as given (no body)."""
    lines = [b" ".join(part for part in (method, target, version) if part)]
    lines += [name + b": " + value for name, value in headers]
    return line_end.join(lines) + line_end + line_end


def valid_upgrade(rng: random.Random, target: bytes = b"/ws") -> bytes:
    """A WebSocket upgrade the server must accept."""
    return request(b"GET", target, b"HTTP/1.1", upgrade_headers(rng))


def http_get(rng: random.Random, target: bytes | None = None) -> bytes:
    """A plain GET for the HTTP port."""
    headers: Headers = [(b"Host", b"127.0.0.1")]
    if rng.random() < 0.5:
        headers.append((b"User-Agent", b"fuzz/1"))
    if rng.random() < 0.5:
        headers.append((b"Accept", b"*/*"))
    if rng.random() < 0.5:
        headers.append((b"Connection", rng.choice((b"close", b"keep-alive"))))
    return request(b"GET", target or rng.choice(HTTP_TARGETS[:7]), b"HTTP/1.1", headers)


def hostile_host(rng: random.Random) -> bytes:
    """A Host value from ``HOSTILE_HOSTS`` or made up: punycode prefix, non-ASCII, long."""
    roll = rng.random()
    if roll < 0.6:
        return rng.choice(HOSTILE_HOSTS)
    if roll < 0.75:
        return b"xn--" + bytes(rng.choice(b"abz09-") for _ in range(rng.randint(0, 12)))
    if roll < 0.9:
        return bytes(rng.randrange(0x80, 0x100) for _ in range(rng.randint(1, 12)))
    return b".".join(b"a" * rng.randint(0, 80) for _ in range(rng.randint(1, 6)))
