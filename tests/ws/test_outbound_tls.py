"""The outbound path's encryption step (a TLS connection): when frames are encrypted, what a
partial write keeps, where records made while reading go, and a broken session.

A real socket pair carries the bytes; the encryption is a recording stand-in that brackets each
plaintext, so the exact bytes on the wire and the order of the calls can be asserted (real TLS
end to end is tests/ws/test_tls.py, where the client's TLS layer would refuse any record out of
order).
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator

import pytest
import trio

from broadcaster.ws.frames import Frame
from broadcaster.ws.outbound import Outbound

BIG_BYTES = 2_000_000  # more than a socket pair's buffers take at once


class Bracketing:
    """Encrypts ``p`` as ``[p]`` and records every plaintext it was given."""

    def __init__(self) -> None:
        self.plaintexts: list[bytes] = []

    def __call__(self, plaintext: bytes) -> bytes:
        self.plaintexts.append(bytes(plaintext))
        return b"[" + bytes(plaintext) + b"]"


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, peer = socket.socketpair()
    ours.setblocking(False)
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    with ours, peer:
        yield ours, peer


def outbound(broken: list[str]) -> Outbound:
    return Outbound(
        max_items=100,
        max_bytes=1 << 30,
        stall_timeout_s=60,
        on_slow=broken.append,
        on_broken=lambda: broken.append("broken"),
    )


async def read_exactly(peer: socket.socket, size: int) -> bytes:
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(peer))
    data = bytearray()
    with trio.fail_after(10):
        while len(data) < size:
            data += await stream.receive_some(1 << 16)
    return bytes(data)


async def test_frames_are_encrypted_when_written_and_a_replaced_update_never_is(
    nursery: trio.Nursery, pair: tuple[socket.socket, socket.socket]
) -> None:
    ours, peer = pair
    encrypt = Bracketing()
    broken: list[str] = []
    out = outbound(broken)
    out.attach(ours.fileno(), nursery.start_soon, encrypt=encrypt)

    big = Frame("x" * BIG_BYTES, topic="feed")
    out.push(big)  # the direct path: encrypted now, the kernel takes part of it
    assert encrypt.plaintexts == [big.wire]
    assert 0 < out.pending_bytes < len(big.wire) + 2  # the rest, as ciphertext

    older, newer = Frame('"older"', topic="feed"), Frame('"newer"', topic="feed")
    assert Outbound.fan_out([out], older, 0) == 1
    assert Outbound.fan_out([out], newer, 0) == 1
    assert out.replaced_updates == 1
    out.push_ciphertext(b"<made while reading>")  # after the started frame, before `newer`
    assert encrypt.plaintexts == [big.wire]  # queued frames wait to be encrypted

    expected = b"[" + big.wire + b"]" + b"<made while reading>" + b"[" + newer.wire + b"]"
    assert await read_exactly(peer, len(expected)) == expected
    await out.wait_drained()
    assert encrypt.plaintexts == [big.wire, newer.wire]
    assert out.pending_bytes == 0
    assert broken == []


async def test_records_made_while_reading_go_at_once_when_nothing_is_queued(
    nursery: trio.Nursery, pair: tuple[socket.socket, socket.socket]
) -> None:
    ours, peer = pair
    out = outbound([])
    out.attach(ours.fileno(), nursery.start_soon, encrypt=Bracketing())
    out.push_ciphertext(b"<key update>")
    out.push(Frame('"after"'))
    expected = b"<key update>[" + Frame('"after"').wire + b"]"
    assert await read_exactly(peer, len(expected)) == expected


async def test_a_broken_tls_session_is_a_peer_gone_not_a_fan_out_error(
    nursery: trio.Nursery, pair: tuple[socket.socket, socket.socket]
) -> None:
    ours, _ = pair

    def broken_session(plaintext: bytes) -> bytes:
        raise ssl.SSLError("bad record mac")

    broken: list[str] = []
    out = outbound(broken)
    out.attach(ours.fileno(), nursery.start_soon, encrypt=broken_session)
    assert Outbound.fan_out([out], Frame('"update"', topic="feed"), 0) == 0
    assert broken == ["broken"]
    assert out.direct_fd == -1
