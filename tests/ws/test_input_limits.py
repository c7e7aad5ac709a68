"""What one client may send: bytes not characters, fragments per message, paced frames and bytes.

Each test serves one connection over a real loopback socket (``served``) and speaks raw
WebSocket frames with wsproto's client side. The pacing tests run in virtual time
(``autojump_clock``): the reader's waits are Trio sleeps, so their length is exact.
"""

from __future__ import annotations

import trio
import trio.testing
from wsproto.events import Ping, TextMessage

from broadcaster.protocol import CloseCode
from tests.fakes import make_hub
from tests.ws.test_connection import Peer, served


def pongs(peer: Peer) -> list[object]:
    return [m.get("id") for m in peer.messages if m["type"] == "pong"]


def ping_with_pad(ping_id: int, pad: str) -> TextMessage:
    return TextMessage(f'{{"type":"ping","id":{ping_id},"pad":"{pad}"}}')


async def test_the_message_size_limit_counts_utf8_bytes_not_characters() -> None:
    hub = make_hub(["a"], max_message_bytes=1000)
    overhead = len(ping_with_pad(1, "").data)
    fits = "€" * ((1000 - overhead) // 3)  # 3 bytes each: just under the limit in bytes
    too_big = "€" * 400  # 400 characters, 1200 bytes
    async with served(hub) as (connection, peer, served_done):
        await peer.read_until(lambda: peer.messages)
        await peer.send(ping_with_pad(1, fits))
        await peer.read_until(lambda: pongs(peer) == [1])
        await peer.send(ping_with_pad(2, too_big))
        await peer.read_until(lambda: peer.closed is not None)
        with trio.fail_after(5):
            await served_done.wait()
    assert peer.closed is not None
    assert peer.closed.code == CloseCode.MESSAGE_TOO_BIG
    assert connection.close_reason == "Exceeded maximum message size: 1000 bytes"
    assert pongs(peer) == [1]
    assert hub.counters.oversized_messages == 1


async def test_a_message_in_more_fragments_than_allowed_closes_with_1009() -> None:
    hub = make_hub(["a"], max_message_fragments=4)
    async with served(hub) as (connection, peer, served_done):
        await peer.read_until(lambda: peer.messages)
        for parts in (
            ['{"type":', '"ping",', '"id":', "1}"],
            ['{"type":', '"pi', "ng", ',"id"', ":2}"],
        ):
            for number, part in enumerate(parts):
                await peer.send(TextMessage(part, message_finished=number == len(parts) - 1))
        await peer.read_until(lambda: peer.closed is not None)
        with trio.fail_after(5):
            await served_done.wait()
    assert pongs(peer) == [1]  # four fragments are fine; the message in five is not
    assert peer.closed is not None
    assert peer.closed.code == CloseCode.MESSAGE_TOO_BIG
    assert connection.close_reason == "message split into more than 4 frames"


async def test_one_byte_fragments_are_refused_after_the_limit_not_parsed_forever() -> None:
    hub = make_hub(["a"])  # the default limits
    async with served(hub) as (connection, peer, served_done):
        await peer.read_until(lambda: peer.messages)
        text = '{"type":"ping","pad":"' + "x" * 5000 + '"}'
        data = b"".join(
            peer.ws.send(TextMessage(char, message_finished=False)) for char in text[:-1]
        )
        await peer.sock.send(data)
        await peer.read_until(lambda: peer.closed is not None)
        with trio.fail_after(5):
            await served_done.wait()
    assert peer.closed is not None
    assert peer.closed.code == CloseCode.MESSAGE_TOO_BIG
    assert connection.close_reason is not None
    assert connection.close_reason.startswith("message split into more than")


async def test_frames_over_the_allowance_are_read_at_the_allowed_pace(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = make_hub(["a"], frames_per_s=10)
    async with served(hub) as (_, peer, _):
        await peer.read_until(lambda: peer.messages)
        pongs_at: list[float] = []
        start = trio.current_time()
        await peer.sock.send(b"".join(peer.ws.send(Ping(b"%d" % n)) for n in range(40)))
        while len(pongs_at) < 40:
            before = peer.pongs_received
            await peer.read_some()
            pongs_at += [trio.current_time() - start] * (peer.pongs_received - before)
    # One second's allowance (10 frames) at once, then 10 a second: the 40th after 3 s.
    assert sum(1 for at in pongs_at if at < 0.05) in range(10, 12)
    assert 2.9 <= pongs_at[-1] <= 3.2


async def test_bytes_over_the_allowance_pause_reading_until_it_is_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = make_hub(["a"], bytes_per_s=1024, messages_per_s=1000)
    async with served(hub) as (connection, peer, _):
        await peer.read_until(lambda: peer.messages)
        batch = b"".join(peer.ws.send(ping_with_pad(n, "x" * 980)) for n in range(10))
        start = trio.current_time()
        await peer.sock.send(batch)  # about 10 KiB in one read: answered at once
        await peer.read_until(lambda: len(pongs(peer)) == 10)
        assert trio.current_time() - start < 0.05
        await peer.send(TextMessage('{"type":"ping","id":"next"}'))
        await peer.read_until(lambda: pongs(peer)[-1:] == ["next"], timeout_s=30)
        waited_s = trio.current_time() - start
        assert connection.close_code is None
    # The next read waits until the ~9 KiB overspent on top of the 1 KiB allowance is back.
    overspent = len(batch) - 1024
    assert overspent / 1024 <= waited_s <= overspent / 1024 + 0.2
