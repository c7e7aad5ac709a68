#!/usr/bin/env python3
"""Our service from any checkout, fed by the in-process source of scripts/bench_source.py, with
memory probes: the server that scripts/abuse and scripts/soak measure.

    python scripts/service_under_test.py [--checkout DIR] [--interval-ms 100]
        [--payload-bytes 1000] [--set max_message_bytes=65536 ...] [--tracemalloc FRAMES]
        [--dump-dir DIR] [--stop-on-stdin-eof]

It imports ``broadcaster`` from ``--checkout`` (default: this repository), so the same tools
measure an old tree (a ``git worktree``) and a fixed one, with this repository's virtualenv:
the trees must share their dependencies. It runs ``broadcaster.service.serve(settings,
source=BenchSource)``, the function the CLI runs, with one topic, ``bench``, answered at once
with a row of about ``--payload-bytes``. The settings are the product's defaults (message limit,
rate limit, heartbeats, output limits...) except the ports (any free one), the broadcast
interval, no default topics (clients subscribe to ``bench``), a high ``--max-connections`` and
whatever ``--set NAME=VALUE`` gives, by field name of ``broadcaster.config.Settings``.

Prints one JSON line on stdout once listening: ``{"event": "listening", "ws_port", "http_port",
"broadcaster_path", "pid"}``. Stops gracefully on SIGTERM/SIGINT (the service's own handling) or
when stdin closes with ``--stop-on-stdin-eof``.

Probes, for telling a leak of Python objects from allocator warm-up:

- SIGUSR1: a full collection that counts the cyclic garbage it frees, per type (garbage that
  was waiting for the collector), then a JSON dump in ``--dump-dir`` (``dump-N.json``): RSS,
  the glibc heap (``mallinfo2``), pymalloc's arenas (``sys._debugmallocstats``), live objects
  per type (``gc.get_objects``), the length of every container attribute of the hub, the broadcast
  loop and the source health, Trio's task and I/O-waiter counts. With ``--tracemalloc FRAMES``
  (tracing from before ``broadcaster`` is imported) it also writes ``snapshot-N.tracemalloc``
  for the controller to compare (``tracemalloc.Snapshot.load``): the server keeps no snapshot.
  Then one line ``{"event": "dump", "n": N, "path": ...}`` on stdout.
- SIGUSR2: ``malloc_trim(0)`` (glibc gives free heap pages back), then one line
  ``{"event": "trimmed", "rss_before", "rss_after"}``. RSS that trim gives back was free memory
  kept by the allocator, not live objects.

The service's loop is blocked while a probe runs (up to a few seconds with tracemalloc).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import signal
import sys
import tempfile
import time
import tracemalloc
from collections import Counter, deque
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkout", type=Path, default=ROOT, help="tree to import from")
    parser.add_argument("--interval-ms", type=int, default=100, help="--broadcast-interval-ms")
    parser.add_argument("--payload-bytes", type=int, default=1000, help="size of one update")
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a Settings field (repeatable)")  # fmt: skip
    parser.add_argument("--tracemalloc", type=int, default=0, metavar="FRAMES",
                        help="trace allocations with this many frames (0: off)")  # fmt: skip
    parser.add_argument("--dump-dir", type=Path, default=None, help="where SIGUSR1 dumps go")
    parser.add_argument("--stop-on-stdin-eof", action="store_true")
    return parser.parse_args()


def import_service(checkout: Path) -> tuple[Any, Any, Any]:
    """``broadcaster`` from ``checkout``, then bench_source (which then reuses those modules).

    Returns the modules ``broadcaster.service``, ``broadcaster.config`` and ``bench_source``.
    """
    sys.path.insert(0, str(checkout.resolve()))
    import broadcaster.config as config
    import broadcaster.logs
    import broadcaster.service as service
    import broadcaster.sources.base  # noqa: F401  (bench_source imports it: from the checkout)

    sys.path.insert(0, str(ROOT / "scripts"))
    import bench_source

    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None) or ""
        if name.split(".")[0] == "broadcaster" and path:
            assert Path(path).resolve().is_relative_to(checkout.resolve()), (name, path)
    return service, config, bench_source


# --- probes --------------------------------------------------------------------------------------


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL("libc.so.6")


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def glibc_heap() -> dict[str, int]:
    """mallinfo2: ``arena`` (heap from brk), ``hblkhd`` (mmapped), in use and free bytes."""
    libc = _libc()
    libc.mallinfo2.restype = _MallInfo2
    info = libc.mallinfo2()
    return {
        "arena_bytes": info.arena,
        "mmapped_bytes": info.hblkhd,
        "in_use_bytes": info.uordblks,
        "free_bytes": info.fordblks,
        "releasable_top_bytes": info.keepcost,
    }


def pymalloc_stats() -> dict[str, int]:
    """The summary lines of ``sys._debugmallocstats()`` (it writes to file descriptor 2)."""
    keys = {
        "# arenas allocated total": "arenas_allocated_total",
        "# arenas reclaimed": "arenas_reclaimed",
        "# arenas highwater mark": "arenas_highwater",
        "# arenas allocated current": "arenas_current",
        "# bytes in allocated blocks": "bytes_in_allocated_blocks",
        "# bytes in available blocks": "bytes_in_available_blocks",
    }
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        text = capture.read().decode(errors="replace")
    stats: dict[str, int] = {}
    for line in text.splitlines():
        label, _, value = line.rpartition("=")
        label = label.strip()
        if label in keys:
            with contextlib.suppress(ValueError):
                stats[keys[label]] = int(value.strip().replace(",", ""))
    return stats


def container_sizes(owner: object) -> dict[str, int]:
    """The length of every dict, set, list or deque attribute of ``owner`` (nested dicts of
    containers are summed, e.g. subscribers per topic)."""
    sizes: dict[str, int] = {}
    for name, value in vars(owner).items():
        if isinstance(value, dict | set | list | deque):
            sizes[name] = len(value)
            if (
                isinstance(value, dict)
                and value
                and all(isinstance(inner, dict | set) for inner in value.values())
            ):
                sizes[f"{name}[*]"] = sum(len(inner) for inner in value.values())
    return sizes


def live_types() -> dict[str, int]:
    """Objects tracked by the collector, per type (module.qualname)."""
    counts: Counter[str] = Counter()
    for obj in gc.get_objects():
        kind = type(obj)
        counts[f"{kind.__module__}.{kind.__qualname__}"] += 1
    return dict(counts)


def collect_garbage(top: int = 20) -> tuple[int, dict[str, int]]:
    """A full collection that first counts, per type, the unreachable objects it frees (cyclic
    garbage waiting for the collector); the number freed and the ``top`` types."""
    saved = gc.get_debug()
    gc.set_debug(gc.DEBUG_SAVEALL)  # unreachable objects go to gc.garbage instead of away
    try:
        collected = gc.collect()
        counts: Counter[str] = Counter()
        for obj in gc.garbage:
            kind = type(obj)
            counts[f"{kind.__module__}.{kind.__qualname__}"] += 1
        gc.garbage.clear()
    finally:
        gc.set_debug(saved)
    gc.collect()  # now free them
    return collected, dict(counts.most_common(top))


class Probes:
    """The SIGUSR1 and SIGUSR2 probes of one running service."""

    def __init__(self, dump_dir: Path, running: Any) -> None:
        self.dump_dir = dump_dir
        self.running = running
        self.dumps = 0

    def dump(self) -> dict[str, Any]:
        import trio

        started = time.monotonic()
        self.dumps += 1
        n = self.dumps
        rss_before_collect = rss_bytes()
        collected, garbage = collect_garbage()
        statistics = trio.lowlevel.current_statistics()
        io = statistics.io_statistics
        report: dict[str, Any] = {
            "n": n,
            "unix_time": time.time(),
            "rss_bytes": rss_bytes(),
            "rss_before_collect_bytes": rss_before_collect,
            "gc_collected": collected,
            "gc_garbage_types": garbage,
            "gc_garbage": len(gc.garbage),
            "glibc": glibc_heap(),
            "pymalloc": pymalloc_stats(),
            "trio": {
                "tasks_living": statistics.tasks_living,
                "tasks_waiting_read": getattr(io, "tasks_waiting_read", None),
                "tasks_waiting_write": getattr(io, "tasks_waiting_write", None),
            },
            "containers": {
                "hub": container_sizes(self.running.hub),
                "loop": container_sizes(self.running.loop),
                "health": container_sizes(self.running.health),
            },
            "hub_totals": self.running.hub.counters.as_dict(),
            "live_types": live_types(),
        }
        if tracemalloc.is_tracing():
            snapshot_path = self.dump_dir / f"snapshot-{n}.tracemalloc"
            tracemalloc.take_snapshot().dump(str(snapshot_path))
            traced, peak = tracemalloc.get_traced_memory()
            report["tracemalloc"] = {
                "snapshot": str(snapshot_path),
                "traced_bytes": traced,
                "traced_peak_bytes": peak,
                "tracemalloc_own_bytes": tracemalloc.get_tracemalloc_memory(),
            }
            gc.collect()  # the snapshot's own objects
        report["probe_s"] = round(time.monotonic() - started, 3)
        path = self.dump_dir / f"dump-{n}.json"
        path.write_text(json.dumps(report, indent=1, sort_keys=True), encoding="utf-8")
        return {"event": "dump", "n": n, "path": str(path), "probe_s": report["probe_s"]}

    def trim(self) -> dict[str, Any]:
        before = rss_bytes()
        gc.collect()
        _libc().malloc_trim(0)
        return {"event": "trimmed", "rss_before": before, "rss_after": rss_bytes()}

    async def watch(self) -> None:
        """Answer SIGUSR1 and SIGUSR2 until cancelled."""
        import trio

        with trio.open_signal_receiver(signal.SIGUSR1, signal.SIGUSR2) as signals:
            async for signum in signals:
                line = self.dump() if signum == signal.SIGUSR1 else self.trim()
                say(line)


def say(line: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


# --- running -------------------------------------------------------------------------------------


async def run(args: argparse.Namespace, settings: Any, service: Any, bench_source: Any) -> None:
    import trio

    source = bench_source.BenchSource("bench", bench_source.pad_bytes("bench", args.payload_bytes))
    dump_dir = args.dump_dir or Path(tempfile.mkdtemp(prefix="service-under-test-"))
    dump_dir.mkdir(parents=True, exist_ok=True)
    async with trio.open_nursery() as nursery:

        async def serve(*, task_status: trio.TaskStatus[Any]) -> None:
            try:
                await service.serve(
                    settings, handle_signals=True, source=source, task_status=task_status
                )
            finally:
                nursery.cancel_scope.cancel()  # the probes and the stdin watcher

        running = await nursery.start(serve)
        nursery.start_soon(Probes(dump_dir, running).watch)
        http_port = int(running.http_url.rsplit(":", 1)[1].split("/", 1)[0])
        say(
            {
                "event": "listening",
                "ws_port": running.websocket.port,
                "http_port": http_port,
                "pid": os.getpid(),
                "broadcaster_path": os.path.dirname(service.__file__),
                "dump_dir": str(dump_dir),
                "tracemalloc_frames": args.tracemalloc,
            }
        )
        if args.stop_on_stdin_eof:
            await trio.to_thread.run_sync(bench_source.read_until_eof, abandon_on_cancel=True)
            os.kill(os.getpid(), signal.SIGTERM)


def main() -> None:
    args = parse_args()
    if args.tracemalloc:
        tracemalloc.start(args.tracemalloc)
    service, config, bench_source = import_service(args.checkout)
    import trio

    with tempfile.TemporaryDirectory(prefix="service-under-test-") as scratch:
        topics_file = Path(scratch) / "topics.toml"
        topics_file.write_text(
            '[[topic]]\nname = "bench"\ndescription = "in-process source"\n'
            'query = "SELECT bench"\n',
            encoding="utf-8",
        )
        values: dict[str, Any] = {
            "ws_host": HOST,
            "ws_port": 0,
            "http_host": HOST,
            "http_port": 0,
            "broadcast_interval_ms": args.interval_ms,
            "topics_file": topics_file,
            "default_topics": "",
            "log_level": args.log_level,
        }
        for item in args.set:
            name, _, value = item.partition("=")
            values[name.strip()] = value
        try:
            settings = config.build_settings(values)
        except Exception as exc:  # ConfigError of the checkout's own module
            sys.exit(f"service_under_test.py: {exc}")
        import broadcaster.logs

        broadcaster.logs.configure_logging(settings.log_format, settings.log_level)
        trio.run(partial(run, args, settings, service, bench_source))


if __name__ == "__main__":
    main()
