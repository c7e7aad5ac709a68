"""The ``broadcaster`` command as an operator runs it: flags, errors, signals, exit codes.

The service runs as a real subprocess (``python -m broadcaster serve``) against the real
influxd, with real clients over loopback, and is stopped with real signals.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed

from broadcaster import cli, service
from broadcaster.broadcast import topics as broadcast_topics
from broadcaster.broadcast.pop_topics import BUILTIN_TOPICS
from broadcaster.cli import build_parser, settings_from
from broadcaster.config import Settings
from broadcaster.ops.fd_limit import RESERVED_FDS
from broadcaster.service import RunningService
from tests.fakes import FakeSource
from tests.influxd import Influxd, free_ports
from tests.services import make_settings
from tests.wsclient import connect, eventually, next_message, raw_handshake

CLIENTS = 100
SHUTDOWN_TIMEOUT_MS = 5000


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "broadcaster", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--ws-port", "abc"], ["--ws-port", "'abc'"]),
        (["--ws-port", "70000"], ["--ws-port", "'70000'"]),
        (["--broadcast-interval-ms", "0"], ["--broadcast-interval-ms", "'0'"]),
        (["--influx-url", "not a url"], ["--influx-url", "'not a url'"]),
        (["--log-format", "xml"], ["--log-format", "'xml'"]),
        (["--outbox-messages", "1"], ["--outbox-messages", "'1'"]),
        (["--heartbeat-interval-ms", "60000"], ["--connection-timeout-ms"]),
        (["--topics-file", "/no/such/file.toml"], ["--topics-file", "/no/such/file.toml"]),
        (["--no-such-flag", "1"], ["--no-such-flag"]),
        (["--default-topics", "overview,nope"], ["--default-topics", "nope"]),
    ],
)
def test_bad_value_exits_2_with_one_line(args: list[str], named: list[str]) -> None:
    result = run_cli("serve", *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for word in named:
        assert word in lines[0]


def test_bad_environment_value_is_named_by_its_flag() -> None:
    result = run_cli("serve", env={**os.environ, "BROADCASTER_MAX_CONNECTIONS": "lots"})
    assert result.returncode == 2
    assert "--max-connections" in result.stderr
    assert "'lots'" in result.stderr


def test_invalid_topics_file_exits_2(tmp_path: Path) -> None:
    topics = tmp_path / "topics.toml"
    topics.write_text('[[topic]]\nname = "bad name!"\nquery = "SELECT 1"\n')
    result = run_cli("serve", "--topics-file", str(topics))
    assert result.returncode == 2
    assert "topic #1" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_window_query_without_its_group_by_time_exits_2(tmp_path: Path) -> None:
    topics = tmp_path / "topics.toml"
    topics.write_text(
        '[[topic]]\nname = "h"\nkind = "window"\nwindow = "1h"\nresolution = "10s"\n'
        'query = "SELECT mean(v) FROM m WHERE $timeFilter GROUP BY host"\n'
    )
    result = run_cli("serve", "--topics-file", str(topics))
    assert result.returncode == 2
    assert "must GROUP BY time(10s)" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_flag_beats_environment_beats_default() -> None:
    args = build_parser().parse_args(["serve", "--ws-port", "9001"])
    environ = {"BROADCASTER_WS_PORT": "9002", "BROADCASTER_HTTP_PORT": "9003"}
    settings = settings_from(args, environ)
    assert settings.ws_port == 9001
    assert settings.http_port == 9003
    assert settings.influx_db == "metrics"
    assert settings.default_topics == ("overview", "regressions")


def test_port_in_use_is_one_line_and_exit_1() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("serve", "--ws-port", str(port), "--http-port", "0")
    assert result.returncode == 1
    assert "cannot start" in result.stderr
    assert "Traceback" not in result.stderr


class ServiceProcess:
    """``python -m broadcaster serve`` on free ports, its log in a file."""

    def __init__(
        self,
        influxd: Influxd,
        influx_db: str,
        log_path: Path,
        open_files: tuple[int, int] | None = None,
        **flags: Any,
    ) -> None:
        """``open_files``: the (soft, hard) RLIMIT_NOFILE the process starts with."""
        self.ws_port, self.http_port = free_ports(2)
        self.log_path = log_path
        args = {
            "ws-port": self.ws_port,
            "http-port": self.http_port,
            "influx-url": influxd.url,
            "influx-db": influx_db,
            "broadcast-interval-ms": 500,
            **flags,
        }
        command = [sys.executable, "-m", "broadcaster", "serve"]
        for name, value in args.items():
            command += [f"--{name}", str(value)]

        def limit_open_files() -> None:
            if open_files is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, open_files)

        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, preexec_fn=limit_open_files
            )

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}/ws"

    def log(self) -> str:
        return self.log_path.read_text()

    async def ready(self) -> None:
        async def answers() -> bool:
            try:
                async with httpx.AsyncClient() as client:
                    await client.get(f"http://127.0.0.1:{self.http_port}/health")
            except httpx.TransportError:
                return False
            return True

        await eventually(answers, timeout_s=30)

    async def wait_exit(self, timeout_s: float) -> int:
        with trio.fail_after(timeout_s):
            await eventually(lambda: self.process.poll() is not None, timeout_s=timeout_s)
        return self.process.returncode

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def service_process(
    influxd: Influxd, influx_db: str, tmp_path: Path
) -> Iterator[type[ServiceProcess]]:
    started: list[ServiceProcess] = []

    def start(open_files: tuple[int, int] | None = None, **flags: Any) -> ServiceProcess:
        log_path = tmp_path / f"service{len(started)}.log"
        process = ServiceProcess(influxd, influx_db, log_path, open_files, **flags)
        started.append(process)
        return process

    yield start  # type: ignore[misc]
    for process in started:
        process.kill()


async def test_sigterm_tells_every_client_and_closes_with_1001(service_process: Any) -> None:
    service: ServiceProcess = service_process(**{"shutdown-timeout-ms": SHUTDOWN_TIMEOUT_MS})
    await service.ready()
    outcomes: dict[int, tuple[dict[str, Any], int]] = {}

    async def client(number: int, task_status: trio.TaskStatus[None]) -> None:
        async with connect(service.url) as ws:
            assert (await next_message(ws))["type"] == "welcome"
            task_status.started()
            while True:
                message = await next_message(ws, timeout_s=30)
                if message["type"] == "server_shutdown":
                    break
            with pytest.raises(ConnectionClosed) as closed:
                await next_message(ws)
            assert closed.value.reason is not None
            outcomes[number] = (message, closed.value.reason.code)

    async with trio.open_nursery() as nursery:
        for number in range(CLIENTS):
            await nursery.start(client, number)
        started = trio.current_time()
        service.process.send_signal(signal.SIGTERM)
        returncode = await service.wait_exit(timeout_s=SHUTDOWN_TIMEOUT_MS / 1000 + 10)
        elapsed_s = trio.current_time() - started
    assert returncode == 0, service.log()
    assert elapsed_s < SHUTDOWN_TIMEOUT_MS / 1000 + 2
    assert len(outcomes) == CLIENTS
    for message, code in outcomes.values():
        assert message["reason"] == "server shutting down"
        assert message["reconnectAfterMs"] == 2000  # the default of --reconnect-after-ms
        assert message["timestamp"].endswith("Z")
        assert code == 1001
    assert f'"clients": {CLIENTS}' in service.log() or f'"clients":{CLIENTS}' in service.log()


async def test_second_signal_exits_at_once(service_process: Any) -> None:
    service: ServiceProcess = service_process(**{"shutdown-timeout-ms": 30000})
    await service.ready()
    # A peer that never reads nor answers the close handshake keeps the graceful path busy.
    stuck = await trio.to_thread.run_sync(raw_handshake, "127.0.0.1", service.ws_port)
    try:
        service.process.send_signal(signal.SIGTERM)
        await eventually(lambda: "shutting down" in service.log())
        service.process.send_signal(signal.SIGINT)
        returncode = await service.wait_exit(timeout_s=5)
    finally:
        stuck.close()
    assert returncode == 128 + signal.SIGINT


async def test_startup_raises_the_open_file_limit_and_says_how_many_clients_fit(
    service_process: Any,
) -> None:
    service = service_process(open_files=(256, 2048), **{"max-connections": 5000})
    try:
        await service.ready()
        (line,) = [json.loads(x) for x in service.log().splitlines() if "open-file limit" in x]
    finally:
        service.process.send_signal(signal.SIGTERM)
    assert await service.wait_exit(15) == 0
    assert line["soft_limit_before"] == 256
    assert line["soft_limit"] == 2048
    assert line["connection_capacity"] == 2048 - RESERVED_FDS
    assert line["max_connections"] == 5000
    assert line["level"] == "warning"  # 5000 connections would not fit: said at startup


# --- the topic catalog: built once, by the CLI ------------------------------------------------


def test_cli_reads_the_topics_file_once_and_serves_that_catalog(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    topics = tmp_path / "topics.toml"
    topics.write_text('[[topic]]\nname = "extra"\nquery = "SELECT 1"\n')
    reads: list[Path] = []
    load = broadcast_topics.load_topics_file

    def counting_load(path: Path) -> list[broadcast_topics.Topic]:
        reads.append(path)
        return load(path)

    served: list[Mapping[str, broadcast_topics.Topic] | None] = []

    async def fake_serve(
        settings: Settings, *, catalog: Mapping[str, broadcast_topics.Topic] | None = None, **_: Any
    ) -> None:
        served.append(catalog)

    monkeypatch.setattr(broadcast_topics, "load_topics_file", counting_load)
    monkeypatch.setattr(service, "serve", fake_serve)
    monkeypatch.setattr(cli, "configure_logging", lambda *args: None)
    cli.main(["serve", "--topics-file", str(topics)])
    assert reads == [topics]
    (catalog,) = served
    assert catalog is not None
    assert "extra" in catalog
    assert catalog["extra"].query == "SELECT 1"


async def test_the_service_runs_on_the_catalog_it_is_given(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    topics = tmp_path / "topics.toml"
    topics.write_text('[[topic]]\nname = "extra"\nquery = "SELECT 1"\n')
    settings = make_settings(topics_file=str(topics))
    catalog = broadcast_topics.build_catalog(
        BUILTIN_TOPICS, settings.topics_file, settings.default_topics
    )
    topics.write_text("not toml at all [")  # the service must not read the file again
    stop = trio.Event()
    running: RunningService = await nursery.start(
        partial(service.serve, settings, catalog=catalog, stop=stop, source=FakeSource())
    )
    assert running.hub.topics == list(catalog)
    assert "extra" in running.hub.topics
    stop.set()
