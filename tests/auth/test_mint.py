"""``broadcaster token`` as a real subprocess, checked by the verifier the service uses."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from broadcaster.auth.identity import Identity
from broadcaster.auth.mint import parse_ttl
from broadcaster.auth.startup import build_verifier
from broadcaster.config import build_settings
from tests.auth.signing import new_secret, write

DEADLINE_S = 60


async def broadcaster_token(*args: str) -> tuple[int, str, str]:
    """Run ``broadcaster token`` in a real process: (exit code, stdout, stderr)."""
    with trio.fail_after(DEADLINE_S):
        done = await trio.run_process(
            [sys.executable, "-m", "broadcaster", "token", *args],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def verify(secret_file: Path, token: str, **settings: Any) -> Identity:
    values = {"auth_mode": "jwt", "jwt_secret_file": str(secret_file), **settings}
    async with httpx.AsyncClient() as client:
        verifier = build_verifier(build_settings(values), client)
        assert verifier is not None
        return await verifier.verify(token)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("30m", 1800), ("1h", 3600), ("1d", 86400), ("3600", 3600), (" 2h ", 7200)],
)
def test_parse_ttl(text: str, seconds: int) -> None:
    assert parse_ttl(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "0s", "-5", "1w", "1.5h", "h", "1 h", "1hh"])
def test_parse_ttl_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="invalid value"):
        parse_ttl(text)


async def test_a_minted_token_is_accepted_by_the_service_verifier(tmp_path: Path) -> None:
    secret_file = write(tmp_path / "secret", new_secret(64) + b"\n")
    before = time.time()
    code, out, err = await broadcaster_token(
        "--secret-file", str(secret_file), "--sub", "alice", "--tenant", "acme",
        "--topics", "overview,region-*", "--ttl", "30m", "--audience", "dash",
        "--issuer", "dev", "--algorithm", "HS512",
    )  # fmt: skip
    assert (code, err) == (0, "")
    identity = await verify(secret_file, out.strip(), jwt_audience="dash", jwt_issuer="dev")
    assert (identity.sub, identity.tenant, identity.topics) == (
        "alice",
        "acme",
        ("overview", "region-*"),
    )
    assert before + 1800 - 1 <= identity.expires_at_unix_s <= time.time() + 1800


async def test_the_default_is_hs256_for_an_hour(tmp_path: Path) -> None:
    secret_file = write(tmp_path / "secret", new_secret(32))
    code, out, _ = await broadcaster_token("--secret-file", str(secret_file), "--sub", "bob")
    assert code == 0
    identity = await verify(secret_file, out.strip())
    assert (identity.sub, identity.tenant, identity.topics) == ("bob", None, None)
    assert identity.expires_at_unix_s - time.time() == pytest.approx(3600, abs=30)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ttl", "soon"], "invalid value 'soon'"),
        (["--tenant", "ac'me"], "must match"),
        (["--algorithm", "HS512"], "too short"),  # the 32-byte secret fits HS256 only
        (["--secret-file", "/nonexistent/secret"], "cannot be read"),
    ],
)
async def test_bad_values_exit_2_with_one_line(
    tmp_path: Path, args: list[str], message: str
) -> None:
    secret_file = write(tmp_path / "secret", new_secret(32))
    code, out, err = await broadcaster_token(
        "--secret-file", str(secret_file), "--sub", "carol", *args
    )
    assert (code, out) == (2, "")
    assert err.count("\n") == 1
    assert message in err
