"""Byte-level mutations: flip, overwrite, insert, delete, duplicate, and line-ending swaps.

The bytes inserted favour what breaks text protocols: NUL, CR, LF, colon, comma, DEL, and
bytes >= 0x80 (a lone UTF-8 lead byte, Latin-1 letters, 0xff).
"""

from __future__ import annotations

import random

INTERESTING_BYTES = bytes(
    (0x00, 0x09, 0x0A, 0x0D, 0x20, 0x22, 0x2C, 0x3A, 0x3B, 0x7F, 0x80, 0xC3, 0xE9, 0xFF)
)
NON_ASCII = bytes(range(0x80, 0x100))
CONTROL = bytes((*range(0x00, 0x20), 0x7F))


def some_bytes(rng: random.Random, count: int) -> bytes:
    """``count`` bytes in runs of 1-64, each run interesting, non-ASCII, control or random."""
    out = bytearray()
    while len(out) < count:
        run = min(rng.randint(1, 64), count - len(out))
        pool = rng.choice((INTERESTING_BYTES, NON_ASCII, CONTROL, b""))
        out += bytes(rng.choices(pool, k=run)) if pool else rng.randbytes(run)
    return bytes(out)


def mutate(rng: random.Random, data: bytes, count: int) -> bytes:
    """``data`` with ``count`` random mutations applied one after the other."""
    buffer = bytearray(data)
    for _ in range(count):
        if not buffer:
            buffer += some_bytes(rng, rng.randint(1, 8))
            continue
        at = rng.randrange(len(buffer))
        operation = rng.choice(("flip", "set", "insert", "delete", "duplicate", "line_ending"))
        if operation == "flip":
            buffer[at] ^= 1 << rng.randrange(8)
        elif operation == "set":
            buffer[at] = rng.choice(INTERESTING_BYTES + NON_ASCII[:8])
        elif operation == "insert":
            buffer[at:at] = some_bytes(rng, rng.randint(1, 16))
        elif operation == "delete":
            del buffer[at : at + rng.randint(1, 32)]
        elif operation == "duplicate":
            piece = buffer[at : at + rng.randint(1, 64)]
            where = rng.randrange(len(buffer) + 1)
            buffer[where:where] = piece
        else:
            replacement = rng.choice((b"\n", b"\r", b"\r\r\n", b"\n\r", b"\r\n\r\n", b""))
            buffer[:] = bytes(buffer).replace(b"\r\n", replacement, rng.randint(1, 3))
    return bytes(buffer)
