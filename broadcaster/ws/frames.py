"""What the server sends: messages and their WebSocket frames, each encoded once.

A server frame is never masked (RFC 6455 section 5.1), so a frame's bytes do not depend on
the connection: a ``metrics_update`` is framed once per tick and the same ``bytes`` object is
written to every subscriber. The server negotiates no extension (no permessage-deflate, whose
compression state would be per connection), so this small encoder is the whole outbound
framing; wsproto parses what clients send. Frames are never fragmented.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from wsproto.frame_protocol import Opcode

_FIN = 0x80
_MAX_CONTROL_PAYLOAD_BYTES = 125
_SHORT_LENGTH_LIMIT = 126  # lengths below fit in the second header byte
_MEDIUM_LENGTH_LIMIT = 1 << 16  # below: a 2-byte extended length, else 8 bytes


def encode_frame(opcode: Opcode, payload: bytes) -> bytes:
    """One unmasked, unfragmented frame."""
    length = len(payload)
    first = _FIN | opcode
    if length < _SHORT_LENGTH_LIMIT:
        header = struct.pack("!BB", first, length)
    elif length < _MEDIUM_LENGTH_LIMIT:
        header = struct.pack("!BBH", first, 126, length)
    else:
        header = struct.pack("!BBQ", first, 127, length)
    return header + payload


def close_payload(code: int, reason: str) -> bytes:
    """A close frame's payload: the code, then the reason cut to fit a control frame."""
    encoded = reason.encode()[: _MAX_CONTROL_PAYLOAD_BYTES - 2]
    return struct.pack("!H", code) + encoded.decode(errors="ignore").encode()


@dataclass(frozen=True, slots=True, eq=False)
class Frame:
    """One text message for clients, framed once and shared by every recipient.

    ``topic`` is set on a ``metrics_update``: for a client that is behind, a newer update of
    the same topic replaces an unsent older one (latest wins).
    """

    text: str
    topic: str | None = None
    wire: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "wire", encode_frame(Opcode.TEXT, self.text.encode()))


@dataclass(frozen=True, slots=True, eq=False)
class Control:
    """A ping or pong frame for one client."""

    wire: bytes

    @classmethod
    def ping(cls, payload: bytes) -> Control:
        return cls(encode_frame(Opcode.PING, payload))

    @classmethod
    def pong(cls, payload: bytes) -> Control:
        return cls(encode_frame(Opcode.PONG, payload))


@dataclass(frozen=True, slots=True, eq=False)
class CloseFrame:
    """The close frame: the last thing written to a connection."""

    code: int
    reason: str
    wire: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "wire", encode_frame(Opcode.CLOSE, close_payload(self.code, self.reason))
        )


Outgoing = Frame | Control | CloseFrame
