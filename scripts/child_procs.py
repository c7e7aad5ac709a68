"""The child processes of scripts/abuse and scripts/soak: started pinned, read, stopped by PID."""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path
from typing import IO, Any

import psutil  # type: ignore[import-untyped]
import trio

ROOT = Path(__file__).resolve().parent.parent


class Lines:
    """JSON lines from a child's stdout; waits for one event at a time (bounded).

    Lines of other events met on the way are kept in ``others``.
    """

    def __init__(self, process: trio.Process, name: str) -> None:
        assert process.stdout is not None
        self.stdout = process.stdout
        self.name = name
        self.buffer = b""
        self.others: list[dict[str, Any]] = []

    async def next(self, expected: str, timeout_s: float) -> dict[str, Any]:
        """The next line whose ``event`` is ``expected``.

        Raises:
            trio.TooSlowError: not within ``timeout_s``.
            RuntimeError: the child closed its stdout first.
        """
        with trio.fail_after(timeout_s):
            while True:
                while b"\n" in self.buffer:
                    line, self.buffer = self.buffer.split(b"\n", 1)
                    event: dict[str, Any] = json.loads(line)
                    if event.get("event") == expected:
                        return event
                    self.others.append(event)
                chunk = await self.stdout.receive_some(1 << 16)
                if not chunk:
                    raise RuntimeError(f"{self.name} exited before '{expected}'")
                self.buffer += chunk


async def spawn(command: list[str], *, cpu: int, nice: int, stderr: IO[bytes]) -> trio.Process:
    """Start a child pinned to ``cpu`` with niceness ``nice`` (absolute, not inherited from the
    controller), in its own session (a Ctrl-C in the terminal reaches only the controller), with
    pipes on stdin and stdout."""

    def pin() -> None:  # in the child, between fork and exec: its threads inherit both
        os.sched_setaffinity(0, {cpu})
        os.setpriority(os.PRIO_PROCESS, 0, nice)

    return await trio.lowlevel.open_process(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr,
        cwd=ROOT,
        start_new_session=True,
        preexec_fn=pin,
    )


async def stop(process: trio.Process, timeout_s: float) -> int | None:
    """Close its stdin (our children stop on that), then SIGTERM, then SIGKILL, each given
    ``timeout_s``; the exit code. Only this process, by its PID."""
    if process.stdin is not None:
        await process.stdin.aclose()
    for action in (None, process.terminate, process.kill):
        if process.returncode is not None:
            break
        if action is not None:
            action()
        with trio.move_on_after(timeout_s):
            await process.wait()
    return process.returncode


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process."""
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def core_busy_s() -> list[float]:
    """Busy CPU seconds of each core since boot (idle and iowait excluded)."""
    return [
        float(sum(t) - t.idle - getattr(t, "iowait", 0.0)) for t in psutil.cpu_times(percpu=True)
    ]


def percentile(ordered: list[float], p: float) -> float:
    """Nearest-rank percentile of an ordered, non-empty list."""
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]
