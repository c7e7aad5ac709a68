"""The startup warning of a service without authentication bound beyond loopback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from tests.services import StartService

WARNING = (
    "no authentication (--auth-mode none) on a non-loopback address: anyone on the network "
    "can subscribe to every topic"
)


@pytest.mark.parametrize(
    ("options", "warned"),
    [
        ({}, False),  # 127.0.0.1 for both servers
        ({"ws_host": "localhost"}, False),
        ({"ws_host": "0.0.0.0"}, True),
        ({"http_host": "0.0.0.0"}, True),
    ],
)
async def test_warns_when_anyone_on_the_network_can_subscribe(
    start_service: StartService, options: dict[str, Any], warned: bool
) -> None:
    with capture_logs() as logs:
        await start_service(**options)
    warnings = [entry for entry in logs if entry["event"] == WARNING]
    assert len(warnings) == warned
    if warned:
        assert warnings[0]["log_level"] == "warning"
        assert warnings[0]["addresses"] == ["0.0.0.0"]


async def test_no_warning_with_authentication(start_service: StartService, scratch: Path) -> None:
    secret = scratch / "secret"
    secret.write_text("s" * 32)
    with capture_logs() as logs:
        await start_service(ws_host="0.0.0.0", auth_mode="jwt", jwt_secret_file=str(secret))
    assert not [entry for entry in logs if entry["event"] == WARNING]
