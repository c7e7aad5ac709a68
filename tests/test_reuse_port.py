"""``--reuse-port``: two real service processes share the WebSocket and HTTP ports.

Both processes are started by their documented flags on the same two ports. Every request
below opens a new TCP connection, which the kernel hands to one of the two listening sockets,
so the status API is answered by either process: each tells which it is by its
``startedAt``. No database: nobody subscribes to anything (no default topics), and the
sockets are what is tested.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.influxd import free_ports
from tests.wsclient import connect, eventually, next_message

MAX_CLIENTS = 40


class Processes:
    """``python -m broadcaster serve`` processes on fixed ports, killed at the end."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.ws_port, self.http_port, self.no_database_port = free_ports(3)
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, *flags: str) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "broadcaster", "serve"]
        command += ["--ws-port", str(self.ws_port), "--http-port", str(self.http_port)]
        command += ["--influx-url", f"http://127.0.0.1:{self.no_database_port}"]
        command += ["--default-topics", "", "--log-level", "warning", *flags]
        log = (self.tmp_path / f"service{len(self.started)}.log").open("wb")
        with log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        self.started.append(process)
        return process

    def log(self, index: int) -> str:
        return (self.tmp_path / f"service{index}.log").read_text()

    async def status(self) -> dict[str, Any] | None:
        """The status API as one process answers it on a new connection; None if refused."""
        try:
            async with httpx.AsyncClient(timeout=5) as client:
                response = await client.get(
                    f"http://127.0.0.1:{self.http_port}/api/websocket/status"
                )
        except httpx.TransportError:
            return None
        result: dict[str, Any] = response.json()
        return result


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    started = Processes(tmp_path)
    yield started
    for process in started.started:
        process.kill()
        process.wait()


async def test_two_processes_with_reuse_port_share_the_ports_and_both_serve_clients(
    processes: Processes,
) -> None:
    processes.start("--reuse-port")
    await eventually(lambda: _answers(processes), timeout_s=30)
    processes.start("--reuse-port")
    # Both answer on the one HTTP port: two start times among the answers.
    seen: dict[str, int] = {}

    async def both_answer() -> bool:
        status = await processes.status()
        if status is not None:
            seen[status["startedAt"]] = status["summary"]["activeConnections"]
        return len(seen) == 2

    await eventually(both_answer, timeout_s=30)
    assert processes.started[1].poll() is None, processes.log(1)

    # WebSocket clients on the one port, until both processes count some among them.
    url = f"ws://127.0.0.1:{processes.ws_port}/ws"
    opened, counts = 0, dict.fromkeys(seen, 0)
    with trio.fail_after(60):
        async with AsyncExitStack() as clients:
            while min(counts.values()) == 0 and opened < MAX_CLIENTS:
                ws = await clients.enter_async_context(connect(url))
                assert (await next_message(ws))["type"] == "welcome"
                opened += 1
                counts = await _counts_of_both(processes)
            assert min(counts.values()) > 0, f"{opened} clients, all on one process: {counts}"
            # Every client is served by one process or the other, none twice.
            assert sum(counts.values()) == opened
    assert opened >= 2


async def test_a_process_without_reuse_port_cannot_join(processes: Processes) -> None:
    """The kernel shares a port only between sockets that all set SO_REUSEPORT."""
    processes.start("--reuse-port")
    await eventually(lambda: _answers(processes), timeout_s=30)
    second = processes.start()
    await eventually(lambda: second.poll() is not None, timeout_s=30)
    assert second.returncode == 1
    assert "cannot start" in processes.log(1)
    assert "Address already in use" in processes.log(1)


async def _answers(processes: Processes) -> bool:
    return await processes.status() is not None


async def _counts_of_both(processes: Processes) -> dict[str, int]:
    """Each process's ``activeConnections``, asked until both have answered (new connections
    land on either process, so a handful of requests reach both)."""
    counts: dict[str, int] = {}
    while len(counts) < 2:
        status = await processes.status()
        if status is not None:
            counts[status["startedAt"]] = status["summary"]["activeConnections"]
    return counts
