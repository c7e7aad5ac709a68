"""Fuzz cases for the WebSocket port's opening handshake, one function per kind.

Each starts from a valid upgrade request (``http_requests.upgrade_headers``) and breaks one
thing, or many: bytes, header bytes, header sets, Host, request line, key and version, size,
or sends random bytes or a prefix of a valid request.
"""

from __future__ import annotations

import random

from tests.fuzz.http_requests import (
    METHODS,
    VERSIONS,
    WS_TARGETS,
    hostile_host,
    request,
    upgrade_headers,
    valid_upgrade,
    websocket_key,
)
from tests.fuzz.mutate import CONTROL, NON_ASCII, mutate, some_bytes
from tests.fuzz.plan import Ending, Plan, chunked

# Headers whose values the server (or its library) parses: where a bad byte matters most.
PARSED_HEADERS = (
    b"Connection",
    b"Upgrade",
    b"Host",
    b"Sec-WebSocket-Key",
    b"Sec-WebSocket-Version",
    b"Sec-WebSocket-Extensions",
    b"Sec-WebSocket-Protocol",
    b"User-Agent",
)
MIN_OVERSIZED_BYTES = 10_000
MAX_OVERSIZED_BYTES = 200_000
_ENDINGS = (Ending.HALF_CLOSE, Ending.RESET, Ending.LINGER)


def _ending(rng: random.Random) -> Ending:
    return rng.choices(_ENDINGS, weights=(60, 15, 25))[0]


def _plan(rng: random.Random, data: bytes) -> Plan:
    return Plan(chunked(rng, data), _ending(rng))


def mutated(rng: random.Random) -> Plan:
    """A valid upgrade with 1-4 byte mutations."""
    return _plan(rng, mutate(rng, valid_upgrade(rng), rng.randint(1, 4)))


def header_bytes(rng: random.Random) -> Plan:
    """Non-ASCII or control bytes in one parsed header's name or (mostly) value."""
    headers = upgrade_headers(rng)
    name = rng.choice(PARSED_HEADERS)
    present = [i for i, (n, _) in enumerate(headers) if n.lower() == name.lower()]
    if present:
        at = present[0]
    else:
        at = len(headers)
        headers.append((name, rng.choice((b"permessage-deflate", b"chat", b"x"))))
    header_name, header_value = headers[at]
    pool = NON_ASCII if rng.random() < 0.75 else CONTROL
    bad = bytes(rng.choice(pool) for _ in range(rng.randint(1, 3)))
    if rng.random() < 0.8:
        cut = rng.randint(0, len(header_value))
        header_value = header_value[:cut] + bad + header_value[cut:]
    else:
        cut = rng.randint(0, len(header_name))
        header_name = header_name[:cut] + bad + header_name[cut:]
    headers[at] = (header_name, header_value)
    return _plan(rng, request(b"GET", b"/ws", b"HTTP/1.1", headers))


def header_set(rng: random.Random) -> Plan:
    """Duplicated, missing, empty, folded or junk headers; odd line endings."""
    headers = upgrade_headers(rng)
    for _ in range(rng.randint(1, 3)):
        operation = rng.choice(("duplicate", "drop", "empty", "fold", "junk", "no_colon"))
        at = rng.randrange(len(headers))
        if operation == "duplicate":
            copy = headers[at] if rng.random() < 0.5 else (headers[at][0], b"other")
            headers[at:at] = [copy] * rng.choice((1, 2, 50))
        elif operation == "drop" and len(headers) > 1:
            del headers[at]
        elif operation == "empty":
            headers[at] = (headers[at][0], rng.choice((b"", b" ", b"\t", b",", b", ,")))
        elif operation == "fold":
            headers[at] = (headers[at][0], headers[at][1] + b"\r\n folded")
        elif operation == "junk":
            count = rng.choice((10, 100, 500))
            headers += [(b"X-Junk-" + str(i).encode(), b"v" * 20) for i in range(count)]
        else:
            headers[at] = (headers[at][0] + headers[at][1], b"")
    line_end = rng.choices((b"\r\n", b"\n", b"\r"), weights=(80, 15, 5), k=1)[0]
    return _plan(rng, request(b"GET", b"/ws", b"HTTP/1.1", headers, line_end))


def host(rng: random.Random) -> Plan:
    """A hostile Host value; sometimes two Host headers, or none."""
    headers = upgrade_headers(rng, host=hostile_host(rng))
    roll = rng.random()
    if roll < 0.15:
        headers.append((b"Host", hostile_host(rng)))
    elif roll < 0.2:
        headers = [(n, v) for n, v in headers if n.lower() != b"host"]
    return _plan(rng, request(b"GET", b"/ws", b"HTTP/1.1", headers))


def request_line(rng: random.Random) -> Plan:
    """Odd methods, targets and versions; HTTP/1.0 with and without Host."""
    headers = upgrade_headers(rng)
    method, target, version = b"GET", b"/ws", b"HTTP/1.1"
    for _ in range(rng.randint(1, 2)):
        part = rng.randrange(3)
        if part == 0:
            method = rng.choice(METHODS)
        elif part == 1:
            target = rng.choice(WS_TARGETS)
        else:
            version = rng.choice(VERSIONS)
    if version == b"HTTP/1.0" and rng.random() < 0.5:
        headers = [(n, v) for n, v in headers if n.lower() != b"host"]
    return _plan(rng, request(method, target, version, headers))


def key_and_version(rng: random.Random) -> Plan:
    """A bad Sec-WebSocket-Key or Sec-WebSocket-Version (or both)."""
    keys = (
        b"",
        b"short",
        b"A" * 1000,
        b"not base64 at all!!",
        b"dGhlIHNhbXBsZSBub25jZQ",
        websocket_key(rng)[:-4] + b"AAAA====",
        b"\xe9\xe9\xe9\xe9",
        websocket_key(rng) + b", " + websocket_key(rng),
    )
    versions = (b"", b"8", b"14", b"13, 8", b"013", b"1" * 100, b"\xe9", b"-13", b"13.0")
    headers = upgrade_headers(rng)
    change_key, change_version = rng.choice(((True, False), (False, True), (True, True)))
    for at, (name, _) in enumerate(headers):
        if change_key and name.lower() == b"sec-websocket-key":
            headers[at] = (name, rng.choice(keys))
        if change_version and name.lower() == b"sec-websocket-version":
            headers[at] = (name, rng.choice(versions))
    return _plan(rng, request(b"GET", b"/ws", b"HTTP/1.1", headers))


def oversized(rng: random.Random) -> Plan:
    """A head of 10-200 KB: one huge value, many headers, or a huge target."""
    size = rng.randint(MIN_OVERSIZED_BYTES, MAX_OVERSIZED_BYTES)
    headers = upgrade_headers(rng)
    target = b"/ws"
    style = rng.choice(("value", "many", "target", "no_end"))
    if style == "value":
        headers.append((b"X-Big", b"b" * size))
    elif style == "many":
        headers += [(b"X-H" + str(i).encode(), b"v" * 40) for i in range(size // 48)]
    elif style == "target":
        target = b"/ws?" + b"q" * size
    data = request(b"GET", target, b"HTTP/1.1", headers)
    if style == "no_end":
        data = data[:-4] + b"\r\nX-Endless: " + b"e" * size  # the head never ends
    return _plan(rng, data)


def random_bytes(rng: random.Random) -> Plan:
    """Random bytes, sometimes after a plausible request-line prefix."""
    prefix = rng.choice((b"", b"", b"GET ", b"GET /ws HTTP/1.1\r\n", b"\x16\x03\x01"))
    return _plan(rng, prefix + some_bytes(rng, rng.choice((1, 16, 512, 8192))))


def truncated(rng: random.Random) -> Plan:
    """A valid upgrade cut at a random point."""
    data = valid_upgrade(rng)
    return _plan(rng, data[: rng.randrange(len(data))])
