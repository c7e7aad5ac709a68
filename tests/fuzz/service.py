"""The service under attack: ``python -m broadcaster serve`` as a real subprocess.

``ServiceUnderTest`` runs it on free loopback ports against a real influxd, over a database
that has data for the ``cpu`` topic (``write_points``), and can be started again (a crash is
the thing we are looking for). Its methods are synchronous so that module-scoped fixtures
can use them; from Trio, call ``start`` through ``trio.to_thread.run_sync``. ``fd_kinds``
sorts its open descriptors by role, for the leak check.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import trio

from tests.influxd import Influxd, free_ports
from tests.wsclient import eventually

TOPIC = "cpu"
TOPICS_TOML = """
[[topic]]
name = "cpu"
description = "latest CPU value (fuzz tests)"
query = "SELECT last(v) AS v FROM cpu"
"""
READY_TIMEOUT_S = 30.0
START_ATTEMPTS = 3
STOP_TIMEOUT_S = 10.0


class PortTaken(RuntimeError):
    """The service could not bind a port chosen as free."""


def write_points(influxd: Influxd, database: str) -> None:
    """A few points for the ``cpu`` topic in ``database`` (which must exist)."""
    influxd.write(database, "cpu v=42\ncpu,host=a v=7")


class ServiceUnderTest:
    """``python -m broadcaster serve`` as a subprocess; ``start`` again after it died."""

    def __init__(
        self, influxd: Influxd, database: str, work_dir: Path, *, interval_ms: int = 250
    ) -> None:
        self.influxd = influxd
        self.database = database
        self.work_dir = work_dir
        self.interval_ms = interval_ms
        self.topics_file = work_dir / "topics.toml"
        self.topics_file.write_text(TOPICS_TOML)
        self.process: subprocess.Popen[bytes] | None = None
        self.ws_port = 0
        self.http_port = 0
        self.stderr_path = work_dir / "service-0.stderr"
        self.starts = 0

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}/ws"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        """Start on new free ports; wait until ``/health`` answers.

        A port chosen as free can be taken by another process before the service binds it
        (it then exits with "cannot start"): that is tried again with new ports, a few times.

        Raises:
            RuntimeError: the process exited or did not answer within ``READY_TIMEOUT_S``.
        """
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                self._start_once()
            except PortTaken:
                if attempt == START_ATTEMPTS:
                    raise
            else:
                return

    def _start_once(self) -> None:
        self.stop()
        self.starts += 1
        self.ws_port, self.http_port = free_ports(2)
        self.stderr_path = self.work_dir / f"service-{self.starts}.stderr"
        flags = {
            "ws-port": self.ws_port,
            "http-port": self.http_port,
            "influx-url": self.influxd.url,
            "influx-db": self.database,
            "topics-file": self.topics_file,
            "default-topics": TOPIC,
            "broadcast-interval-ms": self.interval_ms,
        }
        command = [sys.executable, "-m", "broadcaster", "serve"]
        for name, value in flags.items():
            command += [f"--{name}", str(value)]
        with self.stderr_path.open("wb") as stderr:  # the child keeps its own descriptor
            self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.stderr_tail()
                error = PortTaken if "cannot start" in tail else RuntimeError
                raise error(f"service exited at start:\n{tail}")
            try:
                httpx.get(f"{self.http_url}/health", timeout=1)
            except httpx.TransportError:
                time.sleep(0.05)
                continue
            return
        raise RuntimeError(f"service not ready within {READY_TIMEOUT_S} s:\n{self.stderr_tail()}")

    def ensure_running(self) -> None:
        """Start it again unless it runs and answers ``/health`` (a dying process may still
        run for a moment after its crash: it is given ``STOP_TIMEOUT_S`` to go)."""
        if self.alive():
            try:
                httpx.get(f"{self.http_url}/health", timeout=STOP_TIMEOUT_S)
            except httpx.TransportError:
                pass
            else:
                return
        self.start()

    async def exited_within(self, timeout_s: float) -> bool:
        """True once the process has exited; False if it still runs after ``timeout_s``."""
        with contextlib.suppress(trio.TooSlowError):
            await eventually(lambda: not self.alive(), timeout_s=timeout_s)
        return not self.alive()

    def exit_code(self) -> int | None:
        """None while it runs, else its exit code."""
        return None if self.process is None else self.process.poll()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stderr_tail(self, lines: int = 25) -> str:
        """The last ``lines`` lines of the process's stderr (its logs and any traceback)."""
        try:
            text = self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def open_fds(self) -> int:
        """How many file descriptors the process has open now."""
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def fd_kinds(self) -> dict[str, int]:
        """Open descriptors by what they are: sockets by role (``ws client``, ``http client``,
        ``listening``, ``influxdb``, ``other socket``), else ``pipe``, ``anon_inode``, ``file``.

        Connections to influxd belong to the service's own HTTP client pool (bounded by httpx),
        so a leak check can leave them out.
        """
        sockets = _tcp_sockets()
        unix = _unix_socket_inodes()
        influx_port = int(self.influxd.url.rsplit(":", 1)[1])
        kinds: dict[str, int] = {}
        for name in os.listdir(f"/proc/{self.pid}/fd"):
            try:
                target = os.readlink(f"/proc/{self.pid}/fd/{name}")
            except OSError:
                continue
            kind = target.split(":", 1)[0] if ":" in target else "file"
            if kind == "socket":
                local, remote, state = sockets.get(target[len("socket:[") : -1], (0, 0, ""))
                if state == _TCP_LISTEN:
                    kind = "listening"
                elif remote == influx_port:
                    kind = "influxdb"
                elif local == self.ws_port:
                    kind = "ws client"
                elif local == self.http_port:
                    kind = "http client"
                else:
                    kind = "unix socket" if target[8:-1] in unix else "other socket"
            kinds[kind] = kinds.get(kind, 0) + 1
        return dict(sorted(kinds.items()))

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it is not gone within ``STOP_TIMEOUT_S``."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


_TCP_LISTEN = "0A"


def _tcp_sockets() -> dict[str, tuple[int, int, str]]:
    """Every TCP socket of this network namespace: inode -> (local port, remote port, state)."""
    sockets: dict[str, tuple[int, int, str]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
            sockets[inode] = (
                int(local.rsplit(":", 1)[1], 16),
                int(remote.rsplit(":", 1)[1], 16),
                state,
            )
    return sockets


def _unix_socket_inodes() -> set[str]:
    """Inodes of every Unix-domain socket (Trio's wake-up socketpair is one pair of them)."""
    try:
        lines = Path("/proc/net/unix").read_text().splitlines()[1:]
    except OSError:
        return set()
    return {line.split()[6] for line in lines if len(line.split()) > 6}
