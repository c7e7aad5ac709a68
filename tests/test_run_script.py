"""scripts/run's startup banner, the first thing a person reads: the banner's own lines of the
script, run by bash with the ports set, without starting anything (the whole script installs
packages and starts influxd, which is scripts/run's job, not a unit test's)."""

from __future__ import annotations

import re
import shutil
import subprocess

from tests import REPO

SCRIPT = REPO / "scripts" / "run"


def banner(http_port: int, ws_port: int) -> list[str]:
    text = SCRIPT.read_text()
    match = re.search(r"^cat >&2 <<EOF\n.*?^EOF\n", text, re.MULTILINE | re.DOTALL)
    assert match, "no banner (cat >&2 <<EOF ... EOF) in scripts/run"
    bash = shutil.which("bash")
    assert bash is not None
    variables = (
        f"http_port={http_port} ws_port={ws_port} "
        "influx_url=http://127.0.0.1:8086 influx_db=metrics\n"
    )
    done = subprocess.run(
        [bash, "-euc", variables + match.group(0)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return done.stderr.splitlines()


def test_banner_names_the_dashboard_and_the_other_urls_with_the_ports_in_use() -> None:
    lines = banner(http_port=18080, ws_port=18765)
    assert "[run] Dashboard   http://127.0.0.1:18080/" in lines
    assert "[run] WebSocket   ws://127.0.0.1:18765/ws" in lines
    assert any(line.startswith("[run] HTTP        http://127.0.0.1:18080/health") for line in lines)
