"""A small raw WebSocket client on Trio for load tools (scripts/abuse, scripts/soak).

Not a general client: it speaks just enough RFC 6455 to push traffic at our server cheaply and
to count what comes back.

- :func:`client_frame` builds one masked client frame. Load tools build their frames once and
  send the same bytes over and over, so the cost per message on the load side is a ``send``.
  The masking key is fixed per built frame; the server cannot tell, and masking is then paid
  once per frame built instead of once per frame sent.
- :class:`FrameReader` parses the server's frames (never masked, never fragmented by our
  server) from the byte stream without copying payloads it does not keep: it counts frames and
  bytes, keeps the first bytes of every text payload (enough for ``"type"`` and ``"code"``),
  whole text payloads only when asked, the close code and the payloads of server pings.
- :func:`open_raw` connects and does the HTTP upgrade by hand.
"""

from __future__ import annotations

import base64
import os
import re
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA
FIN = 0x80
PREFIX_BYTES = 96  # of each text payload: enough for {"type":"error","code":"invalid_topic"
RECEIVE_BYTES = 1 << 18
_TYPE = re.compile(rb'"type":\s*"([a-z_]+)"')
_CODE = re.compile(rb'"code":\s*"([a-z_]+)"')


def mask(payload: bytes, key: bytes) -> bytes:
    """XOR ``payload`` with the 4-byte ``key`` repeated (one big-int XOR: fast for 100s of KB)."""
    if not payload:
        return b""
    n = len(payload)
    stream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(stream, "little")).to_bytes(
        n, "little"
    )


def client_frame(
    opcode: int, payload: bytes, *, fin: bool = True, key: bytes | None = None
) -> bytes:
    """One masked client frame (RFC 6455 5.2)."""
    key = key if key is not None else os.urandom(4)
    first = (FIN if fin else 0) | opcode
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", first, 0x80 | length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", first, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, length)
    return header + key + mask(payload, key)


def text_frame(text: str) -> bytes:
    """A masked, unfragmented text frame."""
    return client_frame(OP_TEXT, text.encode())


def close_frame(code: int = 1000) -> bytes:
    """A masked close frame with ``code`` and no reason."""
    return client_frame(OP_CLOSE, struct.pack("!H", code))


def fragmented_text(text: bytes, fragment_bytes: int = 1) -> bytes:
    """``text`` as one message in frames of ``fragment_bytes`` each: a text frame then
    continuations, FIN on the last. All masked with one key."""
    key = os.urandom(4)
    pieces = [text[i : i + fragment_bytes] for i in range(0, len(text), fragment_bytes)]
    frames = []
    for index, piece in enumerate(pieces):
        opcode = OP_TEXT if index == 0 else OP_CONTINUATION
        frames.append(client_frame(opcode, piece, fin=index == len(pieces) - 1, key=key))
    return b"".join(frames)


@dataclass
class TextStats:
    """Text frames of one ``(type, code)`` kind: how many, and their payload sizes."""

    count: int = 0
    total_bytes: int = 0
    min_bytes: int = 1 << 62
    max_bytes: int = 0

    def add(self, size: int) -> None:
        self.count += 1
        self.total_bytes += size
        self.min_bytes = min(self.min_bytes, size)
        self.max_bytes = max(self.max_bytes, size)


@dataclass
class FrameReader:
    """Incremental parser of server frames that counts without copying what it skips.

    ``on_text`` (when given) gets every whole text payload; otherwise only the first
    ``PREFIX_BYTES`` of each are looked at, to classify it by ``"type"`` and ``"code"``.
    """

    on_text: Callable[[bytes], None] | None = None
    bytes_in: int = 0
    frames: Counter[int] = field(default_factory=Counter)
    texts: dict[str, TextStats] = field(default_factory=dict)
    close_code: int | None = None
    close_reason: str = ""
    pings: list[bytes] = field(default_factory=list)
    _pending: bytes = b""
    _opcode: int = 0
    _remaining: int = 0
    _length: int = 0
    _kept: bytearray = field(default_factory=bytearray)
    _keep_all: bool = False

    def feed(self, data: bytes) -> None:
        """Take the next bytes of the stream."""
        self.bytes_in += len(data)
        if self._pending:
            data, self._pending = self._pending + data, b""
        pos, end = 0, len(data)
        while pos < end:
            if self._remaining:
                take = min(self._remaining, end - pos)
                want = self._length if self._keep_all else PREFIX_BYTES
                if len(self._kept) < want:
                    self._kept += data[pos : pos + min(take, want - len(self._kept))]
                pos += take
                self._remaining -= take
                if not self._remaining:
                    self._frame_done()
                continue
            if end - pos < 2:
                break
            first, second = data[pos], data[pos + 1]
            length, header = second & 0x7F, 2
            if length == 126:
                if end - pos < 4:
                    break
                length, header = struct.unpack_from("!H", data, pos + 2)[0], 4
            elif length == 127:
                if end - pos < 10:
                    break
                length, header = struct.unpack_from("!Q", data, pos + 2)[0], 10
            pos += header
            self._opcode, self._length, self._remaining = first & 0x0F, length, length
            self._keep_all = self._opcode != OP_TEXT or self.on_text is not None
            self._kept = bytearray()
            if not length:
                self._frame_done()
        if pos < end:
            self._pending = data[pos:]

    def _frame_done(self) -> None:
        opcode, payload = self._opcode, bytes(self._kept)
        self.frames[opcode] += 1
        if opcode == OP_TEXT:
            if self.on_text is not None:
                self.on_text(payload)
            kind = _TYPE.search(payload[:PREFIX_BYTES])
            code = _CODE.search(payload[:PREFIX_BYTES])
            name = kind.group(1).decode() if kind else "?"
            if code:
                name += f":{code.group(1).decode()}"
            self.texts.setdefault(name, TextStats()).add(self._length)
        elif opcode == OP_CLOSE:
            if len(payload) >= 2:
                self.close_code = struct.unpack("!H", payload[:2])[0]
                self.close_reason = payload[2:].decode(errors="replace")
            else:
                self.close_code = 1005  # no status code
        elif opcode == OP_PING:
            self.pings.append(payload)


class HandshakeError(Exception):
    """The server did not answer the upgrade with 101."""


async def open_raw(
    host: str, port: int, *, user_agent: str = "raw-ws"
) -> tuple[trio.SocketStream, bytes]:
    """Connect and upgrade; the stream and whatever bytes followed the 101 response.

    Raises:
        HandshakeError: any answer but 101, or the server closed first.
        OSError: the connection failed.
    """
    stream = await trio.open_tcp_stream(host, port)
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"User-Agent: {user_agent}\r\n\r\n"
    )
    try:
        await stream.send_all(request.encode())
        buffer = b""
        while b"\r\n\r\n" not in buffer:
            chunk = await stream.receive_some(16384)
            if not chunk:
                raise HandshakeError("closed during the handshake")
            buffer += chunk
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    head, rest = buffer.split(b"\r\n\r\n", 1)
    if not head.startswith(b"HTTP/1.1 101"):
        await trio.aclose_forcefully(stream)
        raise HandshakeError(head.split(b"\r\n", 1)[0].decode(errors="replace"))
    return stream, rest


async def receive_into(stream: trio.SocketStream, reader: FrameReader) -> None:
    """Feed ``reader`` until the peer closes (or the stream breaks)."""
    while True:
        try:
            data = await stream.receive_some(RECEIVE_BYTES)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        if not data:
            return
        reader.feed(data)
