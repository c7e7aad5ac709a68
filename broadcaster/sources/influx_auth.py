"""How InfluxDB's HTTP API is authenticated, shared by the source and the data generator."""

from __future__ import annotations

import httpx


def influx_auth(
    token: str | None, username: str | None, password: str | None
) -> tuple[dict[str, str], httpx.Auth | None]:
    """Headers and auth for a request: a token goes in ``Authorization: Token ...`` (2.x and
    3.x, also accepted by their v1 API); a username and password as HTTP basic auth (1.x)."""
    headers = {"Authorization": f"Token {token}"} if token else {}
    auth = httpx.BasicAuth(username, password) if username and password else None
    return headers, auth
