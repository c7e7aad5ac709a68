"""The Python client is a library: it logs through the standard ``logging`` module and prints
nothing in a program that did not configure logging. Each case is a real subprocess whose
client is refused by a closed loopback port until it declares the server down (an info line
per attempt, then a warning), so the program's whole stdout and stderr can be checked.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import trio

from tests.client.test_client_service import Lines
from tests.influxd import free_port

PROGRAM = """
import logging, sys
import trio
from broadcaster.client import ConnectionState, ReconnectPolicy, open_client

mode, url = sys.argv[1], sys.argv[2]
if mode == "basic":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
elif mode == "service":
    from broadcaster.logs import configure_logging
    configure_logging("json", "info")


async def main() -> None:
    policy = ReconnectPolicy(base_delay_s=0.01, max_delay_s=0.01, max_attempts=1)
    async with open_client(url, ["overview"], reconnect=policy) as client:
        with trio.fail_after(20):
            await client.wait_status(lambda s: s.state is ConnectionState.SERVER_DOWN)


trio.run(main)
"""


def run_program(mode: str) -> tuple[subprocess.CompletedProcess[str], str]:
    url = f"ws://127.0.0.1:{free_port()}/ws"  # nothing listens there
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM, mode, url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done, url


def test_a_program_that_configures_no_logging_prints_nothing() -> None:
    done, _ = run_program("none")
    assert done.stdout == ""
    assert done.stderr == ""  # not even the warning, through logging's last-resort handler


def test_the_applications_logging_configuration_shows_the_client_lines() -> None:
    done, _ = run_program("basic")
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert "INFO broadcaster.client.loop connection ended: cannot connect: " in done.stderr
    assert any(line.startswith("INFO broadcaster.client.loop waiting ") for line in lines)
    assert "WARNING broadcaster.client.loop server down after 1 failed attempts in a row" in lines


def test_the_services_log_configuration_renders_them_as_json() -> None:
    """broadcaster.logs keeps libraries at warning and above, and renders their records, the
    client's fields (``extra``) included, as JSON lines like the service's own."""
    done, url = run_program("service")
    assert done.stdout == ""
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    assert [line["level"] for line in lines] == ["warning"]
    (line,) = lines
    assert line["event"] == "server down after 1 failed attempts in a row"
    assert line["logger"] == "broadcaster.client.loop"
    assert line["failed_attempts"] == 1
    assert line["url"] == url
    assert line["timestamp"].endswith("Z")


async def test_watch_shows_the_client_lines_at_its_log_level() -> None:
    """``broadcaster watch --log-level info`` configures logging for the client's info lines
    (the service's configuration alone keeps libraries at warning), on stderr."""
    url = f"ws://127.0.0.1:{free_port()}/ws"
    command = [sys.executable, "-m", "broadcaster", "watch", "--log-level", "info"]
    command += ["--base-delay-ms", "10", "--max-delay-ms", "10", "--max-attempts", "1", url]
    process = await trio.lowlevel.open_process(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        assert process.stderr is not None
        lines = Lines(process.stderr)
        with trio.fail_after(30):
            await lines.wait_for(r"\[info +\] connection ended: cannot connect: .*reason=")
            await lines.wait_for(r"\[warning +\] server down after 1 failed attempts in a row")
            process.send_signal(signal.SIGINT)
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()
