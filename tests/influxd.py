"""Start a real ``influxd`` (Debian package ``influxdb``) on loopback in a scratch directory.

Used by the test fixtures and by scripts/bench. Nothing here is faked: the process is the
real database, bound to 127.0.0.1 on free ports, its files under the given directory.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

CONFIG_TEMPLATE = """\
reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"
[meta]
  dir = "{root}/meta"
  logging-enabled = false
[data]
  dir = "{root}/data"
  wal-dir = "{root}/wal"
  query-log-enabled = false
  wal-fsync-delay = "100ms"
[monitor]
  store-enabled = false
[http]
  bind-address = "127.0.0.1:{http_port}"
  log-enabled = false
  pprof-enabled = false
[logging]
  level = "warn"
  suppress-logo = true
[retention]
  enabled = false
[shard-precreation]
  enabled = false
"""


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports on 127.0.0.1 that nobody listens on right now.

    The sockets stay bound until all are chosen, so the kernel cannot hand out one twice.
    """
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    return free_ports(1)[0]


@dataclass
class Influxd:
    """A running influxd; ``url`` is its HTTP API."""

    process: subprocess.Popen[bytes]
    url: str
    root: Path

    def query(self, statement: str, database: str | None = None) -> dict[str, object]:
        """Run one InfluxQL statement synchronously (test set-up only)."""
        params = {"q": statement}
        if database:
            params["db"] = database
        response = httpx.post(f"{self.url}/query", params=params, timeout=10)
        response.raise_for_status()
        return response.json()  # type: ignore[no-any-return]

    def write(self, database: str, lines: str) -> None:
        """Write line protocol (nanosecond timestamps) synchronously."""
        response = httpx.post(
            f"{self.url}/write", params={"db": database}, content=lines, timeout=10
        )
        response.raise_for_status()

    def http_stat(self, name: str) -> int:
        """One counter of ``SHOW STATS FOR 'httpd'`` (e.g. ``queryReq``).

        Reading it is itself a query, so ``queryReq`` counts this call too.
        """
        document = self.query("SHOW STATS FOR 'httpd'")
        series = document["results"][0]["series"][0]  # type: ignore[index]
        columns, values = series["columns"], series["values"][0]
        return int(dict(zip(columns, values, strict=True))[name])

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not go within 10 s."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def influxd_binary() -> str:
    """Path of influxd, or a clear error saying how to install it."""
    path = shutil.which("influxd")
    if path is None:
        raise RuntimeError("influxd not found: install the Debian package 'influxdb'")
    return path


def start_influxd(root: Path, *, http_port: int | None = None, timeout_s: float = 30) -> Influxd:
    """Start influxd with its files under ``root`` and wait until ``/ping`` answers.

    A free port can be taken by another process before influxd binds it; then it is tried
    again with new ports, a few times.
    """
    for attempt in range(1, PORT_ATTEMPTS + 1):
        try:
            return _start_influxd_once(root, http_port=http_port, timeout_s=timeout_s)
        except PortTaken:
            if attempt == PORT_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


class PortTaken(RuntimeError):
    """influxd could not bind a port chosen as free."""


PORT_ATTEMPTS = 3


def _start_influxd_once(root: Path, *, http_port: int | None, timeout_s: float) -> Influxd:
    root.mkdir(parents=True, exist_ok=True)
    rpc_port, chosen_http_port = free_ports(2)
    port = http_port or chosen_http_port
    if rpc_port == port:
        rpc_port = chosen_http_port
    config = root / "influxdb.conf"
    config.write_text(CONFIG_TEMPLATE.format(root=root, rpc_port=rpc_port, http_port=port))
    with (root / "influxd.log").open("wb") as log:  # the child keeps its own descriptor
        process = subprocess.Popen(
            [influxd_binary(), "run", "-config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = Influxd(process=process, url=f"http://127.0.0.1:{port}", root=root)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log_text = (root / "influxd.log").read_text(errors="replace")
            error = PortTaken if "address already in use" in log_text else RuntimeError
            raise error(f"influxd exited with {process.returncode}; see {root}/influxd.log")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{server.url}/ping", timeout=1).status_code == 204:
                return server
        time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"influxd did not answer /ping within {timeout_s} s")


@contextlib.contextmanager
def running_influxd(root: Path, *, http_port: int | None = None) -> Iterator[Influxd]:
    """``start_influxd`` as a context manager that always stops it."""
    server = start_influxd(root, http_port=http_port)
    try:
        yield server
    finally:
        server.stop()
