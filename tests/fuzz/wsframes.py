"""A client-side WebSocket frame encoder that will also write what RFC 6455 forbids.

Masked by default, as a client must; every rule can be broken on purpose: no mask, reserved
opcodes, RSV bits, a declared length that does not match the payload, non-minimal length
encodings. Used only to build fuzz cases, so it never checks anything.
"""

from __future__ import annotations

import struct

CONTINUATION = 0x0
TEXT = 0x1
BINARY = 0x2
CLOSE = 0x8
PING = 0x9
PONG = 0xA
RESERVED_OPCODES = (0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF)

_SHORT_LENGTH_LIMIT = 126
_MEDIUM_LENGTH_LIMIT = 1 << 16


def apply_mask(payload: bytes, key: bytes) -> bytes:
    """XOR ``payload`` with the 4-byte ``key`` repeated (masking and unmasking are the same)."""
    if not payload:
        return b""
    size = len(payload)
    repeated = (key * (size // 4 + 1))[:size]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(size, "big")


def encode_length(length: int, *, form: str = "minimal") -> bytes:
    """The 7-bit length field and its extension; ``form`` "16" or "64" forces a longer form.

    Lengths that do not fit the chosen form are cut to it (that is the point for 2**64 - 1).
    """
    if form == "64" or (form == "minimal" and length >= _MEDIUM_LENGTH_LIMIT):
        return struct.pack("!BQ", 127, length & 0xFFFF_FFFF_FFFF_FFFF)
    if form == "16" or (form == "minimal" and length >= _SHORT_LENGTH_LIMIT):
        return struct.pack("!BH", 126, length & 0xFFFF)
    return struct.pack("!B", length)


def encode_frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    mask_key: bytes | None = b"\x37\xfa\x21\x3d",
    declared_length: int | None = None,
    length_form: str = "minimal",
) -> bytes:
    """One frame as a client would send it, or as a broken one would.

    Args:
        opcode: 4 bits, reserved values allowed.
        rsv: the three RSV bits as an integer 0-7 (no extension is negotiated: any is wrong).
        mask_key: 4 bytes; None sends the payload unmasked with the mask bit clear.
        declared_length: the length written in the header, default ``len(payload)``.
        length_form: "minimal", "16" or "64" (longer forms than needed are a protocol error).
    """
    first = (0x80 if fin else 0) | ((rsv & 0x7) << 4) | (opcode & 0xF)
    length = len(payload) if declared_length is None else declared_length
    length_bytes = bytearray(encode_length(length, form=length_form))
    if mask_key is None:
        return bytes([first]) + bytes(length_bytes) + payload
    length_bytes[0] |= 0x80
    return bytes([first]) + bytes(length_bytes) + mask_key + apply_mask(payload, mask_key)


def close_payload(code: int | None, reason: bytes = b"") -> bytes:
    """A close frame's payload: nothing when ``code`` is None, else the code and ``reason``."""
    if code is None:
        return b""
    return struct.pack("!H", code & 0xFFFF) + reason
