#!/usr/bin/env python3
"""The attackers of scripts/abuse: one named attack on our WebSocket server, for a bounded time.

    python scripts/abuse_attacks.py --attack NAME --port P [--seconds 15]

Runs in its own process (scripts/abuse starts it on the load core, niced, so that the bystander
in the controller keeps its turn on the core). Prints JSON lines on stdout:
``{"event": "started"}`` once its clients are connected (the measurement window starts),
then ``{"event": "result", ...}`` when the attack's time is up (the window ends): what it sent,
what came back (bytes, frames, text messages by type and error code with their sizes, close
codes) and probe outcomes. Every client is a raw socket (scripts/raw_ws.py) that sends frames
built once; each reads everything the server sends, so the server is never held back by an
attacker that does not read.

Attacks:

- ``baseline``: nothing (the bystander alone).
- ``multibyte``: probes, each on a new connection: a ~90 KB text message of 3-byte UTF-8
  characters, a ~240 KB one of 4-byte characters (both under 65 536 characters), and a control of
  65 537 ASCII bytes; each a ``ping`` whose ``id`` is the padding, so acceptance shows as a pong
  that echoes it. Then one client sends the 240 KB message at ``--multibyte-per-s`` (default 20,
  the rate limit) for the rest of the time.
- ``fragments``: one client sends ~60 KB ``ping`` messages (under the limit) in 1-byte
  fragments (a text frame, then continuation frames), as fast as the server takes them.
- ``unknown-topics``: ``--clients`` (300) clients, each sending ``--per-s`` (20, the rate limit)
  ``subscribe`` messages a second, each of 100 unknown 128-character topics (about 13 KB).
- ``ping-flood``: one client sending WebSocket ping frames (8-byte payload) as fast as it can.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio
from raw_ws import (
    OP_PING,
    FrameReader,
    TextStats,
    client_frame,
    fragmented_text,
    open_raw,
    text_frame,
)

HOST = "127.0.0.1"
ATTACKS = ("baseline", "multibyte", "fragments", "unknown-topics", "ping-flood")
PROBE_TIMEOUT_S = 5.0
CONNECT_CONCURRENCY = 50


@dataclass
class Client:
    """One attacking connection and what went through it."""

    stream: trio.SocketStream
    reader: FrameReader
    sent_bytes: int = 0
    sent_messages: int = 0
    closed: bool = False

    async def send(self, data: bytes, messages: int = 1) -> bool:
        """Send ``data`` (``messages`` messages or frames); False once the connection is gone."""
        if self.closed:
            return False
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.closed = True
            return False
        self.sent_bytes += len(data)
        self.sent_messages += messages
        return True

    async def read(self) -> None:
        """Read and count everything until the server closes (the close is not answered:
        the server gives up waiting after its close timeout)."""
        while not self.closed:
            try:
                data = await self.stream.receive_some(1 << 18)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if not data:
                break
            self.reader.feed(data)
            if self.reader.close_code is not None:
                break
        self.closed = True


async def connect(port: int, name: str) -> Client:
    stream, rest = await open_raw(HOST, port, user_agent=f"abuse/{name}")
    client = Client(stream, FrameReader())
    client.reader.feed(rest)
    return client


async def connect_many(port: int, name: str, count: int) -> list[Client]:
    clients: list[Client] = []
    limiter = trio.CapacityLimiter(CONNECT_CONCURRENCY)

    async def one() -> None:
        async with limiter:
            clients.append(await connect(port, name))

    async with trio.open_nursery() as nursery:
        for _ in range(count):
            nursery.start_soon(one)
    return clients


def ping_message(total_bytes: int, char: str) -> bytes:
    """A ``ping`` whose ``id`` is ``char`` repeated so that the message is about
    ``total_bytes`` of UTF-8."""
    head, tail = '{"type":"ping","id":"', '"}'
    count = max(0, (total_bytes - len(head) - len(tail)) // len(char.encode()))
    return (head + char * count + tail).encode()


def summarize(clients: list[Client], seconds: float) -> dict[str, Any]:
    """What the clients sent and got back, added up."""
    frames: Counter[int] = Counter()
    texts: dict[str, TextStats] = {}
    closes: Counter[int] = Counter()
    reasons: dict[int, str] = {}
    received = sent = messages = 0
    for client in clients:
        reader = client.reader
        received += reader.bytes_in
        sent += client.sent_bytes
        messages += client.sent_messages
        frames.update(reader.frames)
        for kind, stats in reader.texts.items():
            total = texts.setdefault(kind, TextStats())
            total.count += stats.count
            total.total_bytes += stats.total_bytes
            total.min_bytes = min(total.min_bytes, stats.min_bytes)
            total.max_bytes = max(total.max_bytes, stats.max_bytes)
        if reader.close_code is not None:
            closes[reader.close_code] += 1
            reasons.setdefault(reader.close_code, reader.close_reason)
    return {
        "clients": len(clients),
        "seconds": seconds,
        "sent_bytes": sent,
        "sent_messages": messages,
        "received_bytes": received,
        "frames_by_opcode": {str(op): n for op, n in sorted(frames.items())},
        "texts": {
            kind: {
                "count": s.count,
                "min_bytes": s.min_bytes,
                "max_bytes": s.max_bytes,
                "mean_bytes": round(s.total_bytes / s.count),
            }
            for kind, s in sorted(texts.items())
        },
        "closes": {str(code): {"count": n, "reason": reasons[code]} for code, n in closes.items()},
    }


async def run_clients(
    clients: list[Client], seconds: float, each: Callable[[Client, float], Awaitable[None]]
) -> float:
    """Read every client and run ``each(client, deadline)`` on it until the deadline."""
    started = trio.current_time()
    deadline = started + seconds
    with trio.move_on_at(deadline):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep_forever)  # the window lasts even with no client
            for client in clients:
                nursery.start_soon(client.read)
                nursery.start_soon(each, client, deadline)
    return trio.current_time() - started


async def send_forever(client: Client, data: bytes, messages: int) -> None:
    while await client.send(data, messages):
        pass


async def send_paced(client: Client, data: bytes, per_s: float, offset_s: float) -> None:
    """``per_s`` messages a second, never faster (a late send does not bunch up the next)."""
    period = 1 / per_s
    next_at = trio.current_time() + offset_s
    while True:
        await trio.sleep_until(next_at)
        if not await client.send(data):
            return
        next_at = max(next_at + period, trio.current_time())


async def probe(port: int, label: str, message: bytes) -> dict[str, Any]:
    """Send one message on a new connection: was it answered (a pong) or closed?"""
    client = await connect(port, "probe")
    outcome: dict[str, Any] = {
        "label": label,
        "bytes": len(message),
        "chars": len(message.decode()),
    }
    with trio.move_on_after(PROBE_TIMEOUT_S):
        await client.send(text_frame(message.decode()))
        while set(client.reader.texts) <= {"welcome"} and client.reader.close_code is None:
            data = await client.stream.receive_some(1 << 18)
            if not data:
                break
            client.reader.feed(data)
    pong = client.reader.texts.get("pong")
    if pong is not None:
        outcome["outcome"] = "accepted"
        outcome["pong_bytes"] = pong.max_bytes
    elif client.reader.close_code is not None:
        outcome["outcome"] = f"closed {client.reader.close_code}"
        outcome["close_reason"] = client.reader.close_reason
    else:
        outcome["outcome"] = "no answer"
        outcome["answers"] = sorted(client.reader.texts)
    await trio.aclose_forcefully(client.stream)
    return outcome


async def attack(args: argparse.Namespace) -> dict[str, Any]:
    name, port = args.attack, args.port
    result: dict[str, Any] = {"attack": name}
    clients: list[Client] = []
    if name == "multibyte":
        say({"event": "started"})
        big3 = ping_message(90 * 1024, "€")  # U+20AC: 3 bytes
        big4 = ping_message(240 * 1024, "😀")  # U+1F600: 4 bytes
        control = ping_message(65_537, "x")
        started = time.monotonic()
        result["probes"] = [
            await probe(port, "90 KB of 3-byte chars", big3),
            await probe(port, "240 KB of 4-byte chars", big4),
            await probe(port, "65 537 B of ASCII (control)", control),
        ]
        clients = [await connect(port, name)]
        frame = text_frame(big4.decode())
        rest = max(1.0, args.seconds - (time.monotonic() - started))

        async def each(client: Client, deadline: float) -> None:
            await send_paced(client, frame, args.multibyte_per_s, 0)

        await run_clients(clients, rest, each)
        seconds = time.monotonic() - started
    else:
        if name == "fragments":
            clients = [await connect(port, name)]
            message = ping_message(60_000, "x")
            blob = fragmented_text(message, 1)
            result["message_bytes"] = len(message)
            result["frames_per_message"] = len(message)

            async def each(client: Client, deadline: float) -> None:
                await send_forever(client, blob, 1)

        elif name == "unknown-topics":
            clients = await connect_many(port, name, args.clients)
            topics = [f"unknown-{i:03d}-" + "t" * 116 for i in range(100)]
            subscribe = json.dumps({"type": "subscribe", "topics": topics}, separators=(",", ":"))
            frame = text_frame(subscribe)
            result["message_bytes"] = len(subscribe.encode())
            offsets = iter(range(len(clients)))

            async def each(client: Client, deadline: float) -> None:
                offset = next(offsets) / len(clients) / args.per_s  # spread over the period
                await send_paced(client, frame, args.per_s, offset)

        elif name == "ping-flood":
            clients = [await connect(port, name)]
            pings = 4096  # each counted as a message of one frame
            blob = b"".join(client_frame(OP_PING, b"abusepng") for _ in range(pings))

            async def each(client: Client, deadline: float) -> None:
                await send_forever(client, blob, pings)

        else:  # baseline

            async def each(client: Client, deadline: float) -> None:
                await trio.sleep_forever()

        say({"event": "started"})
        seconds = await run_clients(clients, args.seconds, each)
    for client in clients:
        await trio.aclose_forcefully(client.stream)
    result.update(summarize(clients, seconds))
    return result


def say(line: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attack", choices=ATTACKS, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--clients", type=int, default=300, help="unknown-topics clients")
    parser.add_argument("--per-s", type=float, default=20.0, help="unknown-topics rate each")
    parser.add_argument("--multibyte-per-s", type=float, default=20.0)
    args = parser.parse_args()
    if not 0 < args.seconds <= 600 or not math.isfinite(args.per_s) or args.per_s <= 0:
        parser.error("--seconds must be in (0, 600] and --per-s positive")
    result = trio.run(attack, args)
    say({"event": "result", **result})


if __name__ == "__main__":
    main()
