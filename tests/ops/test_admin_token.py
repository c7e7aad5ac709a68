"""``--admin-token-file``: the operator views that describe clients need an admin token.

The whole service in-process, real HTTP requests over loopback; the token file holds two
tokens (rotation), and each works.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import httpx
import pytest

from broadcaster.service import RunningService
from tests.services import StartService
from tests.wsclient import connect, next_message

PROTECTED = ["/api/websocket/status", "/metrics"]


@pytest.fixture
def tokens(scratch: Path) -> tuple[str, str]:
    return secrets.token_urlsafe(24), secrets.token_urlsafe(24)


async def admin_service(
    start_service: StartService, scratch: Path, tokens: tuple[str, str]
) -> RunningService:
    path = scratch / "admin-tokens"
    path.write_text(f"{tokens[0]}\n{tokens[1]}\n")
    return await start_service(admin_token_file=str(path))


@pytest.mark.parametrize("path", PROTECTED)
async def test_protected_views_answer_401_without_a_valid_admin_token(
    start_service: StartService, scratch: Path, tokens: tuple[str, str], path: str
) -> None:
    service = await admin_service(start_service, scratch, tokens)
    async with httpx.AsyncClient(base_url=service.http_url, timeout=10) as client:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": tokens[0]}):
            response = await client.get(path, headers=headers)
            assert response.status_code == 401
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
            assert tokens[0] not in response.text
        for token in tokens:
            response = await client.get(path, headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 200


async def test_health_stays_public_and_shows_no_client(
    start_service: StartService, scratch: Path, tokens: tuple[str, str]
) -> None:
    service = await admin_service(start_service, scratch, tokens)
    async with connect(f"ws://127.0.0.1:{service.websocket.port}/ws") as ws:
        await next_message(ws)
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.get(f"{service.http_url}/health")
    assert response.status_code == 200
    assert response.json()["services"]["websocket"]["activeConnections"] == 1
    assert "127.0.0.1" not in response.text
    assert "clientInfo" not in response.text
    assert "ws_" not in response.text  # no connection ids


@pytest.mark.parametrize("path", PROTECTED)
async def test_without_the_flag_the_views_stay_open(start_service: StartService, path: str) -> None:
    service = await start_service()
    async with httpx.AsyncClient(timeout=10) as client:
        assert (await client.get(f"{service.http_url}{path}")).status_code == 200
