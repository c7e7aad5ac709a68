"""The package users install: build the wheel and the sdist with ``uv build``, install the wheel
into a fresh virtual environment, and run the ``broadcaster`` command from there.

This is what ``pip install influxdb-broadcaster`` gives a user, away from the repository: the
test runs the installed command with the temporary directory as its working directory, so
nothing is imported from the checkout. The service starts with a bogus InfluxDB URL (it starts
while the database is down) and must serve the dashboard's static files, which live in
``broadcaster/static`` and reach the wheel only as package data. Dependencies come from uv's
cache, warm after ``uv sync``; every step has a deadline. Marked ``package``:
``scripts/test -m package`` runs only these, ``-m "not package"`` skips them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import httpx
import pytest

from broadcaster.ops.http import CONTENT_TYPES
from tests import REPO
from tests.influxd import free_port, free_ports

pytestmark = pytest.mark.package

BUILD_TIMEOUT_S = 120
INSTALL_TIMEOUT_S = 300
READY_TIMEOUT_S = 30
STATIC_DIR = REPO / "broadcaster" / "static"
# Every file of static/, its subfolders too (vendor/uplot/: the chart library and its licence).
STATIC_FILES = sorted(
    p.relative_to(STATIC_DIR).as_posix() for p in STATIC_DIR.rglob("*") if p.is_file()
)
# The ones the service serves (by their suffix; the licence ships but is not served).
SERVED_FILES = [name for name in STATIC_FILES if Path(name).suffix in CONTENT_TYPES]


def _uv() -> str:
    uv = shutil.which("uv")
    if uv is None:
        pytest.fail("uv not found on PATH (scripts/test installs it)", pytrace=False)
    return uv


def _run(command: list[str], timeout_s: float, cwd: Path) -> subprocess.CompletedProcess[str]:
    # Without the project's environment variables, so uv and the command see a plain shell.
    env = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "PYTHONPATH"}}
    result = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout_s, check=False
    )
    assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel and the sdist of the checkout, built once for this module."""
    out = tmp_path_factory.mktemp("dist")
    _run([_uv(), "build", "--out-dir", str(out), str(REPO)], BUILD_TIMEOUT_S, cwd=out)
    return out


def _one(dist: Path, pattern: str) -> Path:
    (found,) = dist.glob(pattern)
    return found


def test_wheel_holds_the_package_with_its_static_files_and_nothing_else(dist: Path) -> None:
    wheel = _one(dist, "influxdb_broadcaster-*-py3-none-any.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names}
    assert top == {"broadcaster", wheel.name.split("-py3")[0] + ".dist-info"}
    assert [n for n in names if n.startswith("broadcaster/static/")] == sorted(
        f"broadcaster/static/{name}" for name in STATIC_FILES
    )
    assert "broadcaster/static/vendor/uplot/LICENSE" in names  # uPlot's MIT licence ships too
    metadata = zipfile.ZipFile(wheel).read(f"{wheel.name.split('-py3')[0]}.dist-info/METADATA")
    assert b"\nName: influxdb-broadcaster\n" in metadata
    entry_points = zipfile.ZipFile(wheel).read(
        f"{wheel.name.split('-py3')[0]}.dist-info/entry_points.txt"
    )
    assert b"broadcaster = broadcaster.cli:main" in entry_points


def test_sdist_holds_the_sources_and_the_tests(dist: Path) -> None:
    with tarfile.open(_one(dist, "influxdb_broadcaster-*.tar.gz")) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    assert {"pyproject.toml", "README.md", "broadcaster/cli.py", "tests/conftest.py"} <= names
    assert not any(name.startswith((".hypothesis/", ".artifacts/", ".ci/")) for name in names)


def test_installed_wheel_runs_and_serves_the_dashboard(dist: Path, tmp_path: Path) -> None:
    uv, venv = _uv(), tmp_path / "venv"
    _run([uv, "venv", "--quiet", "--python", sys.executable, str(venv)], 60, cwd=tmp_path)
    python = venv / "bin" / "python"
    wheel = _one(dist, "*.whl")
    _run(
        [uv, "pip", "install", "--quiet", "--python", str(python), str(wheel)],
        INSTALL_TIMEOUT_S,
        cwd=tmp_path,
    )
    where = _run(
        [str(python), "-c", "import broadcaster; print(broadcaster.__file__)"], 30, tmp_path
    )
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout  # not the checkout
    command = str(venv / "bin" / "broadcaster")
    assert "--ws-port" in _run([command, "serve", "--help"], 30, cwd=tmp_path).stdout

    ws_port, http_port = free_ports(2)
    flags = ["--ws-port", str(ws_port), "--http-port", str(http_port)]
    flags += ["--influx-url", f"http://127.0.0.1:{free_port()}", "--log-format", "console"]
    log_path = tmp_path / "service.log"
    with log_path.open("wb") as log:
        service = subprocess.Popen(
            [command, "serve", *flags], cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        base = f"http://127.0.0.1:{http_port}"
        _wait_ready(service, f"{base}/", log_path)
        assert "vendor/uplot/uPlot.iife.min.js" in SERVED_FILES
        for name in SERVED_FILES:
            response = httpx.get(f"{base}/static/{name}", timeout=5)
            assert response.status_code == 200, name
            assert response.content == (STATIC_DIR / name).read_bytes()
        page = httpx.get(f"{base}/", timeout=5)
        assert page.status_code == 200
        assert page.content == (STATIC_DIR / "index.html").read_bytes()
    finally:
        if service.poll() is None:
            service.send_signal(signal.SIGTERM)
            try:
                service.wait(timeout=15)
            except subprocess.TimeoutExpired:
                service.kill()
                service.wait()
    assert service.returncode == 0, log_path.read_text(errors="replace")


def _wait_ready(service: subprocess.Popen[bytes], url: str, log_path: Path) -> None:
    """Poll ``url`` until it answers (the HTTP server announces itself only in its log)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if service.poll() is not None:
            log = log_path.read_text(errors="replace")
            raise AssertionError(f"service exited with {service.returncode}:\n{log}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.05)
    log = log_path.read_text(errors="replace")
    raise AssertionError(f"service not ready within {READY_TIMEOUT_S} s:\n{log}")
