"""Opening-handshake requests as raw bytes, shared by the handshake tests.

No import of the server's handshake: tests/ws/test_handshake.py must also run against the code
from before it.
"""

from __future__ import annotations

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455's example: its accept is s3pPLMBiTxaQ9kYGzzhZRbK+xOo=
HEADERS = {
    b"Host": b"127.0.0.1",
    b"Upgrade": b"websocket",
    b"Connection": b"Upgrade",
    b"Sec-WebSocket-Key": KEY,
    b"Sec-WebSocket-Version": b"13",
    b"User-Agent": b"handshake-test/1",
}


def upgrade(
    *, line: bytes = b"GET /ws HTTP/1.1", padding_bytes: int = 0, **changes: bytes
) -> bytes:
    """A valid upgrade request, with headers changed (``Sec_WebSocket_Key=...``) or added."""
    headers = dict(HEADERS)
    for name, value in changes.items():
        headers[name.replace("_", "-").encode()] = value
    if padding_bytes:
        headers[b"X-Padding"] = b"p" * padding_bytes
    lines = [line, *(name + b": " + value for name, value in headers.items())]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def header_list(raw: bytes) -> list[tuple[bytes, bytes]]:
    """The headers of the request ``raw``, as (name, value) pairs."""
    lines = raw.split(b"\r\n\r\n")[0].split(b"\r\n")[1:]
    return [(name, value.strip()) for name, _, value in (line.partition(b":") for line in lines)]
