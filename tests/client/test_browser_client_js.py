"""The browser client's unit tests (tests/js/*.test.mjs) run under Node's built-in test
runner, so the one test command, scripts/test, runs them too.

They use a fake WebSocket and fake timers (the unit level); tests/client/test_dashboard_browser.py
runs the same client for real in Chromium.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests import REPO

ROOT = REPO
JS_TESTS = ROOT / "tests" / "js"
TIMEOUT_S = 120


def test_browser_client_unit_tests_pass_under_node() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.fail(
            "node not found: install the Debian package nodejs (scripts/test installs it)",
            pytrace=False,
        )
    tests = sorted(path.relative_to(ROOT).as_posix() for path in JS_TESTS.glob("*.test.mjs"))
    assert tests, f"no JS tests in {JS_TESTS}"
    # The files by name: Node 18 and 20 accept a directory, Node 21+ expects files or globs.
    result = subprocess.run(
        [node, "--test", *tests],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    report = f"node --test exited with {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert result.returncode == 0, report
