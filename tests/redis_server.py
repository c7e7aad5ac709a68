"""A real ``redis-server`` (the Debian package) for the cluster tests.

Each one runs on a free loopback port, in its own temp directory, from its own config file
(no persistence: a restart is a Redis that lost its state), and is stopped by its PID. It can
be stopped and started again on the same port, which is how the tests take Redis away from
a running cluster and give it back.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.influxd import free_port

CONFIG = """\
bind 127.0.0.1
port {port}
dir {directory}
save ""
appendonly no
daemonize no
protected-mode yes
logfile {directory}/redis.log
"""


class RedisServer:
    """One redis-server process on ``127.0.0.1:port``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.config = directory / "redis.conf"
        self.config.write_text(CONFIG.format(port=self.port, directory=directory))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10) -> None:
        """Start it and wait until it accepts connections."""
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed (scripts/test installs it)")
        self.process = subprocess.Popen([binary, str(self.config)], stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"redis-server exited: {(self.directory / 'redis.log').read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        pytest.fail(f"redis-server did not answer on port {self.port} in {timeout_s} s")

    def stop(self) -> None:
        """SIGKILL and wait: Redis gone at once, as in a crash (and its state with it)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None

    def command(self, *args: str) -> bytes:
        """Send one command with the inline protocol; the raw first reply line(s)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
            sock.sendall(" ".join(args).encode() + b"\r\n")
            return sock.recv(65536)


@contextmanager
def running_redis(directory: Path) -> Iterator[RedisServer]:
    """A started redis-server, stopped by PID afterwards."""
    server = RedisServer(directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()
