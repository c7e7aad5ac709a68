"""AdminTokens: the file's tokens, the Bearer header, and rotation by rewriting the file.

The one-second recheck interval is measured on a clock the test moves, so no test sleeps.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from broadcaster.auth.admin import ADMIN_RECHECK_INTERVAL_S, AdminTokens
from broadcaster.errors import ConfigError


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def rewrite(path: Path, text: str) -> None:
    """Write ``text`` and move the mtime on, so a rewrite within the file system's timestamp
    granularity is still a change."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text)
    os.utime(path, ns=(before + 10**9, before + 10**9))


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "admin-tokens"
    path.write_text("\n  old-token  \n\n")
    return path


def test_bearer_with_the_token_is_accepted(token_file: Path) -> None:
    tokens = AdminTokens(token_file)
    assert tokens.check("Bearer old-token")
    assert tokens.check(b"Bearer old-token")
    assert tokens.check(b"bearer  old-token ")


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "old-token",
        "Basic old-token",
        "Bearer old-token2",
        "Bearer old-toke",
        "Bearer \udcff",
        b"Bearer \xff\xfe",
    ],
)
def test_anything_else_is_refused(token_file: Path, header: bytes | str | None) -> None:
    assert AdminTokens(token_file).check(header) is False


@pytest.mark.parametrize("content", ["", "\n \n\t\n"])
def test_a_file_without_tokens_is_a_config_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "empty"
    path.write_text(content)
    with pytest.raises(ConfigError) as caught:
        AdminTokens(path)
    assert (caught.value.setting, caught.value.problem) == ("--admin-token-file", "holds no token")


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        AdminTokens(tmp_path / "nowhere")


def test_rotation_by_rewriting_the_file(token_file: Path) -> None:
    clock = Clock()
    tokens = AdminTokens(token_file, clock=clock)
    # 1. the new token is added as a second line: both work.
    rewrite(token_file, "old-token\nnew-token\n")
    assert not tokens.check("Bearer new-token")  # not looked at again within the interval
    clock.now += ADMIN_RECHECK_INTERVAL_S
    assert tokens.check("Bearer new-token")
    assert tokens.check("Bearer old-token")
    # 2. the scrapers moved; the old line is removed.
    rewrite(token_file, "new-token\n")
    clock.now += ADMIN_RECHECK_INTERVAL_S
    assert tokens.check("Bearer new-token")
    assert not tokens.check("Bearer old-token")


def test_a_broken_rewrite_keeps_the_last_good_tokens(token_file: Path) -> None:
    clock = Clock()
    tokens = AdminTokens(token_file, clock=clock)
    with capture_logs() as logs:
        rewrite(token_file, "\n")
        clock.now += ADMIN_RECHECK_INTERVAL_S
        assert tokens.check("Bearer old-token")
        token_file.unlink()
        clock.now += ADMIN_RECHECK_INTERVAL_S
        assert tokens.check("Bearer old-token")
        clock.now += ADMIN_RECHECK_INTERVAL_S
        assert tokens.check("Bearer old-token")
    assert [entry["event"] for entry in logs] == [
        "admin token file unusable: kept the previous tokens"
    ] * 2
    token_file.write_text("back-token\n")
    clock.now += ADMIN_RECHECK_INTERVAL_S
    assert tokens.check("Bearer back-token")
    assert not tokens.check("Bearer old-token")
