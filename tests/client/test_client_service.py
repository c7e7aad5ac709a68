"""The client against the REAL service (``serve()`` in the test's nursery, a real influxd),
over loopback: the service killed and restarted on the same port, a graceful restart with
``server_shutdown``, and ``broadcaster watch`` as a subprocess.

Real clock, short backoff values, and a generous deadline on every wait.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

import broadcaster
from broadcaster.cli import main
from broadcaster.client import (
    BroadcasterClient,
    ClientStatus,
    ConnectionState,
    MetricsUpdate,
    ReconnectPolicy,
    open_client,
)
from broadcaster.client.watch import format_error, format_status, format_update, summarize
from broadcaster.config import Settings, build_settings
from broadcaster.service import RunningService, serve
from tests.influxd import Influxd, free_ports

MakeSettings = Callable[..., Settings]

TOPICS_TOML = """
[[topic]]
name = "cpu"
description = "latest CPU value"
query = "SELECT last(v) AS v FROM cpu"
"""

SHORT = ReconnectPolicy(base_delay_s=0.2, max_delay_s=0.5, max_attempts=100)


@pytest.fixture
def make_settings(influxd: Influxd, influx_db: str, tmp_path: Path) -> MakeSettings:
    topics_file = tmp_path / "topics.toml"
    topics_file.write_text(TOPICS_TOML)
    influxd.write(influx_db, "cpu v=42")

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "ws_port": 0,
            "http_port": 0,
            "influx_url": influxd.url,
            "influx_db": influx_db,
            "topics_file": str(topics_file),
            "broadcast_interval_ms": 200,
            "default_topics": "overview",
            "log_format": "console",
            "log_level": "warning",
        }
        values.update(overrides)
        return build_settings(values)

    return make


async def run_service(
    settings: Settings,
    scope: trio.CancelScope,
    stop: trio.Event | None = None,
    *,
    task_status: trio.TaskStatus[RunningService],
) -> None:
    """``serve()`` in ``scope``: cancelling it kills the service (no server_shutdown)."""
    with scope:
        await serve(settings, stop=stop, task_status=task_status)


def connected(status: ClientStatus) -> bool:
    return status.state is ConnectionState.CONNECTED


async def next_cpu_update(client: BroadcasterClient, *, seq: int | None = None) -> MetricsUpdate:
    """The next update, skipping ones whose ``seq`` is not ``seq`` (if given)."""
    async for update in client:
        assert update.topic == "cpu"  # the default topic 'overview' was unsubscribed
        if seq is None or update.seq == seq:
            return update
    raise AssertionError("client closed")


async def test_reconnects_after_the_service_is_killed_and_restarted(
    nursery: trio.Nursery, make_settings: MakeSettings
) -> None:
    (port,) = free_ports(1)
    settings = make_settings(ws_port=port)
    first = trio.CancelScope()
    await nursery.start(run_service, settings, first)
    with trio.fail_after(30):
        async with open_client(f"ws://127.0.0.1:{port}/ws", ["cpu"], reconnect=SHORT) as client:
            up = await client.wait_status(connected)
            update = await next_cpu_update(client)
            assert update.seq == 1
            assert update.data["series"][0]["rows"][0]["v"] == 42
            first.cancel()  # killed: connections cut, no server_shutdown
            lost = await client.wait_status(lambda s: s.state is ConnectionState.RECONNECTING)
            assert not lost.planned
            await client.wait_status(lambda s: s.attempt >= 2)  # refused while it is down
            second = trio.CancelScope()
            await nursery.start(run_service, settings, second)
            back = await client.wait_status(connected)
            assert back.connection_id != up.connection_id
            # Subscribed again: the new service's first value of cpu (its seq restarts at 1).
            again = await next_cpu_update(client, seq=1)
            assert again.data["series"][0]["rows"][0]["v"] == 42
            rtt = await client.wait_status(lambda s: s.rtt_ms is not None)
            assert rtt.quality is not None
            second.cancel()


async def test_status_api_shows_the_clients_user_agent(
    nursery: trio.Nursery, make_settings: MakeSettings
) -> None:
    """The client names itself in the handshake, so operators can tell it from a browser."""
    service: RunningService = await nursery.start(run_service, make_settings(), trio.CancelScope())
    expected = f"broadcaster-client/{broadcaster.__version__} (python; trio-websocket)"
    with trio.fail_after(30):
        async with (
            open_client(service.websocket.url, ["cpu"], reconnect=SHORT) as client,
            httpx.AsyncClient(base_url=service.http_url, timeout=10, verify=False) as http,
        ):
            up = await client.wait_status(connected)
            response = await http.get("/api/websocket/status")
    assert response.status_code == 200
    (connection,) = response.json()["connections"]
    assert connection["id"] == up.connection_id
    assert connection["clientInfo"]["userAgent"] == expected


async def start_service_process(
    influxd: Influxd, influx_db: str, topics_file: Path, port: int, log: Path
) -> trio.Process:
    """``python -m broadcaster serve`` on ``port``; SIGTERM makes it shut down gracefully."""
    flags = {
        "ws-port": port,
        "http-port": 0,
        "influx-url": influxd.url,
        "influx-db": influx_db,
        "topics-file": topics_file,
        "default-topics": "overview",
        "broadcast-interval-ms": 200,
        "reconnect-after-ms": 300,
    }
    command = [sys.executable, "-m", "broadcaster", "serve"]
    for name, value in flags.items():
        command += [f"--{name}", str(value)]
    with log.open("ab") as output:  # the child keeps its own descriptor
        return await trio.lowlevel.open_process(command, stdout=output, stderr=subprocess.STDOUT)


async def test_graceful_restart_waits_reconnect_after_ms(
    make_settings: MakeSettings, influxd: Influxd, influx_db: str, tmp_path: Path
) -> None:
    # In a subprocess: SIGTERM is the real graceful shutdown (server_shutdown, then 1001).
    (port,) = free_ports(1)
    settings = make_settings()
    assert settings.topics_file is not None
    start = partial(
        start_service_process, influxd, influx_db, settings.topics_file, port, tmp_path / "log"
    )
    processes = [await start()]
    try:
        with trio.fail_after(60):
            async with open_client(f"ws://127.0.0.1:{port}/ws", ["cpu"], reconnect=SHORT) as client:
                up = await client.wait_status(connected)
                await next_cpu_update(client)
                processes[0].send_signal(signal.SIGTERM)
                planned = await client.wait_status(lambda s: s.planned)
                assert planned.attempt == 0
                assert planned.retry_in_s is not None
                # 300 ms plus jitter of up to 0.5 x max(300 ms, the 2 s floor).
                assert 0.3 <= planned.retry_in_s <= 1.3
                assert planned.last_error is not None
                assert "1001" in planned.last_error
                assert await processes[0].wait() == 0
                processes.append(await start())
                back = await client.wait_status(connected)
                assert back.connection_id != up.connection_id
                await next_cpu_update(client, seq=1)
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
                with trio.CancelScope(shield=True):
                    await process.wait()


class Lines:
    """Lines of a subprocess's stdout, read as they come."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = b""
        self.seen: list[str] = []

    async def wait_for(self, pattern: str) -> str:
        regex = re.compile(pattern)
        for line in self.seen:
            if regex.search(line):
                return line
        while True:
            while b"\n" not in self._buffer:
                chunk = await self._stream.receive_some()
                if not chunk:
                    raise AssertionError(f"no line matching {pattern!r} in {self.seen}")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\n", 1)
            line = raw.decode()
            self.seen.append(line)
            if regex.search(line):
                return line


async def test_watch_shows_server_down_then_updates_and_exits_0_on_sigint(
    nursery: trio.Nursery, make_settings: MakeSettings, tmp_path: Path
) -> None:
    # No --topics: watch follows the service's default topics, here only cpu.
    (port,) = free_ports(1)
    stderr = (tmp_path / "watch.stderr").open("wb")
    command = [sys.executable, "-m", "broadcaster", "watch"]
    command += ["--base-delay-ms", "50", "--max-delay-ms", "100", "--max-attempts", "2"]
    command += ["--probe-interval-ms", "300", f"ws://127.0.0.1:{port}/ws"]
    process = await trio.lowlevel.open_process(command, stdout=subprocess.PIPE, stderr=stderr)
    try:
        assert process.stdout is not None
        lines = Lines(process.stdout)
        with trio.fail_after(30):
            await lines.wait_for(r"status  connecting")
            await lines.wait_for(r"status  reconnecting \(attempt 1/2\)  retry in 0\.\d s")
            await lines.wait_for(r"status  reconnecting \(attempt 2/2\)")
            await lines.wait_for(r"status  server_down  probe in 0\.\d s  .*last: cannot connect")
            # The service comes up: the next half-open probe connects.
            settings = make_settings(ws_port=port, default_topics="cpu")
            await nursery.start(run_service, settings, trio.CancelScope())
            await lines.wait_for(r"status  connected  id=ws_\d+_\d+  ")
            await lines.wait_for(r"status  connected  id=ws_.*rtt=[\d.]+ ms  quality=[a-z]+$")
            first = await lines.wait_for(r"  cpu  #\d+  fresh  series=\[1\]$")
            assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z  cpu  #1  ", first)
            await lines.wait_for(r"  cpu  #2  fresh  ")
            process.send_signal(signal.SIGINT)
            returncode = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()
        stderr.close()
    errors = (tmp_path / "watch.stderr").read_text()
    print("\n".join(lines.seen))
    assert returncode == 0, errors
    assert "Traceback" not in errors
    assert not any("overview" in line for line in lines.seen)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--max-attempts", "0"], "--max-attempts"),
        (["--base-delay-ms", "x"], "--base-delay-ms"),
        (["--base-delay-ms", "9000", "--max-delay-ms", "100"], "--max-delay-ms"),
        (["--jitter-ratio", "-1"], "--jitter-ratio"),
        (["--topics", ","], "--topics"),
        (["http://127.0.0.1/ws"], "ws://"),
    ],
)
def test_watch_rejects_bad_options_with_one_line(
    args: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["watch", *args])
    assert exited.value.code == 2
    errors = capsys.readouterr().err
    assert len(errors.strip().splitlines()) == 1, errors
    assert errors.startswith("broadcaster: error: ")
    assert named in errors


def test_watch_line_formats() -> None:
    stale = MetricsUpdate(
        "overview", 9, "2026-11-22T00:54:29.005Z", True, {"up": 24, "regions": {"a": 1}}, {}
    )
    assert format_update(stale) == (
        "2026-11-22T00:54:29.005Z  overview  #9  STALE  up=24 regions={1}"
    )
    assert summarize({"regressions": [1, 2], "asOf": None, "ok": True, "p": 1.5}) == (
        "regressions=[2] asOf=null ok=true p=1.5"
    )
    assert len(summarize({"k": "x" * 500})) == 120
    down = ClientStatus(
        ConnectionState.SERVER_DOWN, 5, probes=2, retry_in_s=61.25, last_error="cannot connect"
    )
    assert format_status(down, "NOW") == (
        "NOW  status  server_down  probe in 61.2 s  rtt=-  quality=-  last: cannot connect"
    )
    up = ClientStatus(ConnectionState.CONNECTED, 5, connection_id="ws_1_2", rtt_ms=120.0)
    assert format_status(up, "NOW") == (
        "NOW  status  connected  id=ws_1_2  rtt=120.0 ms  quality=good"
    )
    error = {"type": "error", "code": "invalid_topic", "message": "unknown topics ['x']"}
    assert format_error(error, "NOW") == "NOW  error  invalid_topic  unknown topics ['x']"
