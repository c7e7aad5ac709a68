#!/usr/bin/env python3
"""The load generator of scripts/bench: N WebSocket clients in one process, one epoll loop.

Started by scripts/bench (``python scripts/bench_load.py --port P --clients N ...``); it reports
to its parent with one JSON line per phase on stdout: ``storm`` (every client welcomed),
``window_start``, ``window_end``, ``result``. No framework: level-triggered epoll, one ``recv``
per readable socket, a minimal RFC 6455 client, so that thousands of clients cost the load
generator little next to the server. Linux only (epoll).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import select
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Any

import orjson

HOST = "127.0.0.1"


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of ``values``, None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def emit(**event: Any) -> None:
    """One JSON line to scripts/bench."""
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def masked(opcode: int, payload: bytes) -> bytes:
    """A client frame (FIN set, payload < 126 bytes, masked as RFC 6455 requires)."""
    key = os.urandom(4)
    body = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + key + body


class Client:
    """One WebSocket client: its socket, its parser state and the last seq of each topic."""

    __slots__ = (
        "buf",
        "closed_code",
        "error",
        "last",
        "parts",
        "sock",
        "started",
        "state",
        "subscribed",
        "welcomed",
    )

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.buf = bytearray()
        self.parts: list[bytes] = []
        self.state = "new"  # new, connecting, handshake, open, closing, ended
        self.last: dict[str, int] = {}
        self.subscribed = 0
        self.started = self.welcomed = 0.0
        self.closed_code: int | None = None
        self.error: str | None = None


class Load:
    """Every client, and what they received."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.clients = [Client() for _ in range(args.clients)]
        self.by_fd = {c.sock.fileno(): c for c in self.clients}
        self.waiting = list(reversed(self.clients))
        self.epoll = select.epoll()
        self.handshaking = self.settled = self.ready = self.ended = 0
        self.updates = self.update_bytes = self.gaps = self.repeats = self.stale = 0
        self.broadcasts: dict[tuple[str, int], list[float]] = {}  # [timestamp, first, last, n]
        self.other: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.lags: list[float] | None = None
        self.next_tick = time.monotonic()

    def run_until(self, done: Callable[[], bool], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not done() and time.monotonic() < deadline:
            self._start_more()
            events = self.epoll.poll(max(0.0, self.next_tick - time.monotonic()))
            now = time.monotonic()
            if now >= self.next_tick:  # loop lag: how late a 50 ms timer would fire
                if self.lags is not None:
                    self.lags.append(now - self.next_tick)
                self.next_tick = now + 0.05
            for fd, _ in events:  # errors and hang-ups show as a failing recv or SO_ERROR
                client = self.by_fd[fd]
                try:
                    self._ready(client)
                except OSError as exc:
                    self._end(client, type(exc).__name__)

    def _start_more(self) -> None:
        while self.waiting and self.handshaking < self.args.connect_concurrency:
            client = self.waiting.pop()
            client.started, client.state = time.time(), "connecting"
            self.handshaking += 1
            client.sock.setblocking(False)
            client.sock.connect_ex((HOST, self.args.port))
            self.epoll.register(client.sock.fileno(), select.EPOLLOUT)

    def _ready(self, client: Client) -> None:
        sock = client.sock
        if client.state == "connecting":
            if error := sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                raise OSError(error, os.strerror(error))
            key = base64.b64encode(os.urandom(16)).decode()
            sock.send(
                f"GET /ws HTTP/1.1\r\nHost: {HOST}:{self.args.port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\nUser-Agent: broadcaster-bench\r\n\r\n".encode()
            )
            client.state = "handshake"
            self.epoll.modify(sock.fileno(), select.EPOLLIN)
            return
        data = sock.recv(65536)
        now = time.time()
        if not data:
            self._end(client, None if client.closed_code else "connection lost")
            return
        client.buf += data
        if client.state == "handshake":
            head, found, rest = bytes(client.buf).partition(b"\r\n\r\n")
            if not found:
                return
            if not head.startswith(b"HTTP/1.1 101"):
                self._end(client, "handshake refused: " + head.split(b"\r\n")[0].decode())
                return
            client.buf[:], client.state = rest, "open"
            self.handshaking -= 1
        self._frames(client, now)

    def _frames(self, client: Client, now: float) -> None:
        """Handle every complete frame in the buffer (server frames are unmasked)."""
        buf = client.buf
        while len(buf) >= 2:
            length, start = buf[1] & 0x7F, 2
            if length == 126:
                length, start = int.from_bytes(buf[2:4]), 4
            elif length == 127:
                length, start = int.from_bytes(buf[2:10]), 10
            if len(buf) < start + length:
                return
            opcode, fin, payload = buf[0] & 0x0F, buf[0] & 0x80, bytes(buf[start : start + length])
            del buf[: start + length]
            if opcode in (0, 1):
                client.parts.append(payload)
                if fin:
                    self.on_message(client, b"".join(client.parts), now)
                    client.parts.clear()
            elif opcode == 9:
                client.sock.send(masked(10, payload))
            elif opcode == 8:
                client.closed_code = int.from_bytes(payload[:2]) if len(payload) >= 2 else 1005
                if client.state == "open":  # the server closed first: echo its code
                    client.sock.send(masked(8, payload[:2]))
                self._end(client, None)
                return

    def _end(self, client: Client, error: str | None) -> None:
        if client.state == "ended":
            return
        if client.state in ("connecting", "handshake"):
            self.handshaking -= 1
        if not client.welcomed:
            self.settled += 1
            if client.closed_code:
                error = error or f"closed with {client.closed_code} before welcome"
        if error:
            client.error = error
            self.errors[error] += 1
        client.state = "ended"
        self.ended += 1
        with contextlib.suppress(OSError, ValueError):
            self.epoll.unregister(client.sock.fileno())
        client.sock.close()

    def on_message(self, client: Client, text: bytes, now: float) -> None:
        message = orjson.loads(text)
        kind = message.get("type")
        if kind == "metrics_update":
            topic, seq = message["topic"], message["seq"]
            self.updates += 1
            self.update_bytes += len(text)
            self.stale += message["stale"] is True
            previous = client.last.get(topic)
            if previous is None:
                self.ready += len(client.last) + 1 == client.subscribed
            elif seq > previous + 1:
                self.gaps += seq - previous - 1
            elif seq <= previous:
                self.repeats += 1
            client.last[topic] = seq
            record = self.broadcasts.get((topic, seq))
            if record is None:
                stamp = datetime.fromisoformat(message["timestamp"]).timestamp()
                self.broadcasts[(topic, seq)] = [stamp, now, now, 1]
            else:
                record[2] = now
                record[3] += 1
        elif kind == "welcome":
            client.welcomed = now
            client.subscribed = len(message["subscribed"])
            self.settled += 1
        else:
            self.other[str(kind)] += 1

    def close_all(self) -> None:
        """A normal close (1000) from every open client; each ends on the server's reply."""
        for client in self.clients:
            if client.state == "open":
                client.state = "closing"
                try:
                    client.sock.send(masked(8, (1000).to_bytes(2)))
                except OSError as exc:
                    self._end(client, type(exc).__name__)
        self.run_until(lambda: self.ended == len(self.clients), 5)
        for client in self.clients:
            self._end(client, None)


def worker(args: argparse.Namespace) -> None:
    load = Load(args)
    interval, n = args.interval_ms / 1000, args.clients
    storm_start = time.time()
    load.run_until(lambda: load.settled == n, 30 + n / 50)
    welcomed = [c.welcomed - c.started for c in load.clients if c.welcomed]
    emit(
        event="storm",
        welcomed=len(welcomed),
        all_welcomed_s=max((c.welcomed for c in load.clients), default=0) - storm_start,
        per_client_p50_s=percentile(welcomed, 50),
        per_client_p99_s=percentile(welcomed, 99),
        failed=dict(load.errors),
    )
    target = sum(1 for c in load.clients if c.state == "open")
    load.run_until(lambda: load.ready >= target, 10 + 5 * interval)  # every topic, everyone
    settled = time.monotonic() + 2 * interval  # past the storm's catch-up, into steady state
    load.run_until(lambda: time.monotonic() >= settled, 3 * interval)
    emit(event="window_start")
    t0, updates0, cpu0, load.lags = time.time(), load.updates, time.process_time(), []
    load.run_until(lambda: time.time() >= t0 + args.seconds, args.seconds + 1)
    t1, updates1, cpu1, lags = time.time(), load.updates, time.process_time(), load.lags
    load.lags = None
    emit(event="window_end")
    load.run_until(lambda: time.time() >= t1 + interval + 1, interval + 2)  # the window's last
    alive = sum(1 for c in load.clients if c.state == "open")
    window = [b for b in load.broadcasts.values() if t0 <= b[1] < t1]
    ms = [
        [1000 * (b[2] - b[1]) for b in window],
        [1000 * (b[1] - b[0]) for b in window],
        [1000 * (b[2] - b[0]) for b in window],
    ]
    emit(
        event="result",
        topics=max((c.subscribed for c in load.clients), default=0),
        window_s=t1 - t0,
        deliveries=updates1 - updates0,
        alive=alive,
        broadcasts=len(window),
        incomplete=sum(1 for b in window if b[3] != alive),
        spread_ms={q: percentile(ms[0], q) for q in (50, 99, 100)},
        first_age_ms={q: percentile(ms[1], q) for q in (50, 99, 100)},
        last_age_ms={q: percentile(ms[2], q) for q in (50, 99, 100)},
        mean_update_bytes=load.update_bytes / max(1, load.updates),
        gaps=load.gaps,
        repeats=load.repeats,
        stale=load.stale,
        other_messages=dict(load.other),
        closed_by_server=dict(Counter(str(c.closed_code) for c in load.clients if c.closed_code)),
        failed=dict(load.errors),
        cpu_pct=100 * (cpu1 - cpu0) / (t1 - t0),
        lag_ms={q: 1000 * (percentile(lags, q) or 0) for q in (99, 100)},
    )
    load.close_all()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="WebSocket port on 127.0.0.1")
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--interval-ms", type=int, required=True, help="broadcast interval")
    parser.add_argument("--seconds", type=float, required=True, help="measurement window")
    parser.add_argument("--connect-concurrency", type=int, required=True)
    worker(parser.parse_args())


if __name__ == "__main__":
    main()
