"""The systemd unit passes ``systemd-analyze verify`` and keeps its promises: a dedicated user,
hardening (``systemd-analyze security`` rates it), room for 10 000+ connections, and a stop
timeout above the graceful shutdown."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from broadcaster.config import Settings
from broadcaster.service import HTTP_GRACE_S
from broadcaster.ws.connection import CLOSE_HANDSHAKE_TIMEOUT_S
from tests.deploy.tools import UNIT, tool, unit_with_exec_start

# systemd's own scale: 0 (locked down) to 10; up to 2.0 is its "OK" band.
MAX_EXPOSURE = "2.0"


def _settings(unit: Path) -> dict[str, list[str]]:
    """Each key of the unit with its values (a key may repeat: SystemCallFilter)."""
    values: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            values.setdefault(key, []).append(value)
    return values


def _venv_broadcaster() -> str:
    return str(Path(sys.executable).parent / "broadcaster")


def test_systemd_analyze_verify_passes(tmp_path: Path) -> None:
    copy = unit_with_exec_start(UNIT, tmp_path, _venv_broadcaster())
    result = subprocess.run(
        [tool("systemd-analyze"), "verify", "--man=no", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # Unknown keys and bad values are warnings with exit code 0: none is allowed.
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_systemd_rates_the_hardening_ok(tmp_path: Path) -> None:
    copy = unit_with_exec_start(UNIT, tmp_path, _venv_broadcaster())
    result = subprocess.run(
        [
            tool("systemd-analyze"),
            "security",
            "--offline=yes",
            f"--threshold={round(float(MAX_EXPOSURE) * 10)}",
            "--no-pager",
            str(copy),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Overall exposure level for broadcaster.service" in result.stdout


def test_the_unit_runs_as_a_dedicated_user_with_the_settings_file() -> None:
    settings = _settings(UNIT)
    assert settings["User"] == settings["Group"] == ["broadcaster"]
    assert settings["NoNewPrivileges"] == ["yes"]
    assert settings["ProtectSystem"] == ["strict"]
    assert settings["ProtectHome"] == ["yes"]
    assert settings["PrivateTmp"] == ["yes"]
    assert settings["EnvironmentFile"] == ["/etc/broadcaster/broadcaster.env"]
    assert settings["ExecStart"] == ["/opt/broadcaster/bin/broadcaster serve"]
    assert settings["Restart"] == ["on-failure"]


def test_the_limits_fit_10000_connections_and_the_graceful_shutdown() -> None:
    settings = _settings(UNIT)
    assert int(settings["LimitNOFILE"][0]) >= 65536
    assert settings["KillSignal"] == ["SIGTERM"]
    longest_shutdown_s = (
        Settings().shutdown_timeout_ms / 1000 + HTTP_GRACE_S + CLOSE_HANDSHAKE_TIMEOUT_S
    )
    assert int(settings["TimeoutStopSec"][0]) > longest_shutdown_s
