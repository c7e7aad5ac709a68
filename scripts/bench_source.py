#!/usr/bin/env python3
"""Our real service for scripts/bench, fed by an in-process source instead of InfluxDB.

    python scripts/bench_source.py --interval-ms 100 --payload-bytes 1000 --max-connections 1100

Runs ``broadcaster.service.serve(settings)``, the same function the CLI runs, with one topic,
``bench``, whose source is :class:`BenchSource`: a :class:`~broadcaster.sources.base.MetricsSource`
that answers every query at once with one row ``{"sentAtUs": <wall clock, µs>, "pad": "xxx..."}``,
the pad sized so that the whole ``metrics_update`` is about ``--payload-bytes``. So the database is
out of the loop, as in the Node reference server (scripts/bench_node/server.mjs), and what is
measured is the service's fan-out. The topic comes from a generated topics file, so its ``data``
is the generic file-topic shape, ``{"series": [{"name", "tags", "rows": [row]}]}``.

``sentAtUs`` is taken in ``query``, after its one checkpoint: just before the broadcast loop
shapes, encodes and publishes the value. The Node server takes it just before it serializes.

The source is given to ``serve(settings, source=...)``.

Prints one JSON line on stdout once listening:
``{"event": "listening", "ws_port": P, "http_port": H, ...}``. Stops gracefully on SIGTERM or
SIGINT (the service's own signal handling), or with ``--stop-on-stdin-eof`` when stdin closes.
Logs (JSON) go to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a file, Python puts scripts/ on sys.path, not the root

from broadcaster import protocol, service  # noqa: E402
from broadcaster.config import build_settings  # noqa: E402
from broadcaster.errors import ConfigError  # noqa: E402
from broadcaster.logs import configure_logging  # noqa: E402
from broadcaster.sources.base import Series, StatementResult  # noqa: E402

try:
    from broadcaster.broadcast.topics import series_data
except ImportError:  # a tree from before the package had folders (scripts/abuse --checkout)
    from broadcaster.topics import series_data  # type: ignore[no-redef]

HOST = "127.0.0.1"
COLUMNS = ("sentAtUs", "pad")
# No heartbeat pings and no stats lines during a run: the Node server sends none either.
QUIET_MS = 3_600_000


class BenchSource:
    """A MetricsSource that answers every query at once with one row: the time and padding."""

    def __init__(self, topic: str, pad_bytes: int) -> None:
        self._topic = topic
        self._pad = "x" * pad_bytes
        self.queries = 0

    async def query(self, statements: str) -> list[StatementResult]:
        await trio.lowlevel.checkpoint()  # as a real source would; the time is taken after it
        self.queries += 1
        row = (time.time_ns() // 1000, self._pad)
        return [StatementResult((Series(self._topic, COLUMNS, (row,)),))]

    async def ping(self) -> None:
        await trio.lowlevel.checkpoint()


def pad_bytes(topic: str, payload_bytes: int) -> int:
    """The pad that makes our ``metrics_update`` of ``topic`` about ``payload_bytes`` long."""
    row = (time.time_ns() // 1000, "")
    data = series_data([StatementResult((Series(topic, COLUMNS, (row,)),))])
    timestamp = protocol.iso_from_unix_ms(time.time() * 1000) or ""
    probe = protocol.metrics_update(topic, 1_000_000, timestamp, data, stale=False, epoch="bench")
    return max(0, payload_bytes - len(probe.encode()))


async def run(settings: Any, source: BenchSource, stop_on_stdin_eof: bool) -> None:
    async with trio.open_nursery() as nursery:

        async def serve(*, task_status: trio.TaskStatus[service.RunningService]) -> None:
            try:
                # No ``stop=``: like the CLI, it stops on SIGTERM/SIGINT (its own signal watcher).
                await service.serve(
                    settings, handle_signals=True, source=source, task_status=task_status
                )
            finally:
                nursery.cancel_scope.cancel()  # the stdin watcher

        running: service.RunningService = await nursery.start(serve)
        http_port = int(running.http_url.rsplit(":", 1)[1].split("/", 1)[0])
        line = {
            "event": "listening",
            "ws_port": running.websocket.port,
            "http_port": http_port,
        }
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()
        if stop_on_stdin_eof:
            await trio.to_thread.run_sync(read_until_eof, abandon_on_cancel=True)
            os.kill(os.getpid(), signal.SIGTERM)  # the service's graceful shutdown


def read_until_eof() -> None:
    """Block until stdin closes. ``os.read`` on the descriptor, not ``sys.stdin``: a thread left
    blocked in the buffered reader holds its lock, and the interpreter aborts at exit."""
    while os.read(0, 4096):
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ws-port", type=int, default=0, help="0: any free port")
    parser.add_argument("--http-port", type=int, default=0, help="0: any free port")
    parser.add_argument("--interval-ms", type=int, default=100, help="--broadcast-interval-ms")
    parser.add_argument("--payload-bytes", type=int, default=1000, help="size of one update")
    parser.add_argument("--max-connections", type=int, default=20_000)
    parser.add_argument("--topic", default="bench")
    parser.add_argument("--log-level", default="warning")
    parser.add_argument("--tls-cert-file", help="with --tls-key-file: wss:// and https://")
    parser.add_argument("--tls-key-file")
    parser.add_argument("--stop-on-stdin-eof", action="store_true",
                        help="shut down when stdin closes (the controller is gone)")  # fmt: skip
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="broadcaster-bench-source-") as scratch:
        topics_file = Path(scratch) / "topics.toml"
        topics_file.write_text(
            f'[[topic]]\nname = "{args.topic}"\ndescription = "scripts/bench in-process source"\n'
            f'query = "SELECT bench"\n',
            encoding="utf-8",
        )
        try:
            settings = build_settings(
                {
                    "ws_host": HOST,
                    "ws_port": args.ws_port,
                    "http_host": HOST,
                    "http_port": args.http_port,
                    "broadcast_interval_ms": args.interval_ms,
                    "heartbeat_interval_ms": QUIET_MS,
                    "connection_timeout_ms": 2 * QUIET_MS,
                    "stats_interval_ms": QUIET_MS,
                    "max_connections": args.max_connections,
                    "topics_file": topics_file,
                    "default_topics": "",
                    "log_level": args.log_level,
                    "tls_cert_file": args.tls_cert_file,
                    "tls_key_file": args.tls_key_file,
                }
            )
        except ConfigError as exc:
            sys.exit(f"bench_source.py: {exc}")
        configure_logging(settings.log_format, settings.log_level)
        source = BenchSource(args.topic, pad_bytes(args.topic, args.payload_bytes))
        trio.run(partial(run, settings, source, args.stop_on_stdin_eof))


if __name__ == "__main__":
    main()
