"""``--log-level debug``: a line per message received and per subscription change, never a
token; at info level, none of that work is done at all.

A real client over loopback to the real WebSocket server on the in-memory hub (the
``endpoint`` fixture), and to the whole service with real signed tokens for the
authentication case; the level is set the way ``configure_logging`` sets it, with structlog's
filtering bound logger.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog
from structlog.testing import capture_logs

from broadcaster.ws import connection as connection_module
from broadcaster.ws.server import WebSocketEndpoint
from tests.fakes import PolicyHub
from tests.jwt_keys import AUDIENCE, ISSUER, claims, hs256_key
from tests.services import StartService
from tests.wsclient import connect, next_message, send_json, wait_for

SECRET = "eyJhbGciOiJIUzI1NiJ9.c2VjcmV0LXRva2Vu.c2lnbmF0dXJl"


@pytest.fixture
def log_level() -> Iterator[Any]:
    """Set the lowest level logged for the test; the configuration is restored after."""
    saved = structlog.get_config()

    def set_level(level: int) -> None:
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(level))

    yield set_level
    structlog.configure(**saved)


SUBSCRIBE = {"type": "subscribe", "topics": ["overview"]}
UNSUBSCRIBE = {"type": "unsubscribe", "topics": ["overview"]}
AUTH = {"type": "auth", "token": SECRET}
INVALID = "{not json"
PING = {"type": "ping", "id": 7}


async def _converse(endpoint: WebSocketEndpoint) -> None:
    """Subscribe, unsubscribe, send an auth message (ignored without --auth-mode jwt), an
    invalid one and a ping; wait for the answer to each one that has one."""
    async with connect(endpoint.url) as ws:
        await next_message(ws)  # welcome
        await send_json(ws, SUBSCRIBE)
        await wait_for(ws, lambda m: m["type"] == "subscription_confirmed")
        await send_json(ws, UNSUBSCRIBE)
        await wait_for(ws, lambda m: m["type"] == "subscription_confirmed")
        await send_json(ws, AUTH)
        await ws.send_message(INVALID)
        await wait_for(ws, lambda m: m["type"] == "error")
        await send_json(ws, PING)
        await wait_for(ws, lambda m: m["type"] == "pong")


def _size(message: Any) -> int:
    return len(message.encode() if isinstance(message, str) else orjson.dumps(message))


async def test_debug_logs_each_message_and_subscription_change_without_the_token(
    endpoint: WebSocketEndpoint, hub: PolicyHub, log_level: Any
) -> None:
    log_level(logging.DEBUG)
    with capture_logs() as logs:
        await _converse(endpoint)
    received = [entry for entry in logs if entry["event"] == "message received"]
    (connection_id,) = {entry["connection_id"] for entry in received}
    assert [(entry["type"], entry["size"]) for entry in received] == [
        ("subscribe", _size(SUBSCRIBE)),
        ("unsubscribe", _size(UNSUBSCRIBE)),
        ("auth", _size(AUTH)),
        ("invalid (invalid_json)", _size(INVALID)),
        ("ping", _size(PING)),
    ]
    changes = [
        {key: entry[key] for key in ("event", "connection_id", "added", "removed") if key in entry}
        for entry in logs
        if entry["event"] in ("subscribed", "unsubscribed")
    ]
    assert changes == [
        {"event": "subscribed", "connection_id": connection_id, "added": ["overview"]},
        {"event": "unsubscribed", "connection_id": connection_id, "removed": ["overview"]},
    ]
    assert SECRET not in repr(logs)
    assert SECRET[-12:] not in repr(logs)


async def test_info_level_does_no_per_message_logging_work(
    endpoint: WebSocketEndpoint,
    hub: PolicyHub,
    log_level: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    log_level(logging.INFO)
    calls: list[str | bytes] = []
    monkeypatch.setattr(connection_module, "_log_received", lambda _, raw: calls.append(raw))
    with capture_logs() as logs:
        await _converse(endpoint)
    assert calls == []  # the fields of a debug line are never even built
    events = {entry["event"] for entry in logs}
    assert not events & {"message received", "subscribed", "unsubscribed"}


async def test_the_check_is_live_at_debug(
    endpoint: WebSocketEndpoint,
    hub: PolicyHub,
    log_level: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The counterpart of the test above: the same conversation at debug calls the logger,
    so the info-level test cannot pass for a reason that has nothing to do with the level."""
    log_level(logging.DEBUG)
    calls: list[str | bytes] = []
    monkeypatch.setattr(connection_module, "_log_received", lambda _, raw: calls.append(raw))
    with capture_logs():
        await _converse(endpoint)
    assert len(calls) == 5


async def test_with_authentication_the_first_message_and_a_refresh_log_no_token(
    start_service: StartService, scratch: Path, log_level: Any
) -> None:
    log_level(logging.DEBUG)
    key = hs256_key(scratch)
    service = await start_service(
        auth_mode="jwt",
        jwt_secret_file=str(key.key_file),
        jwt_audience=AUDIENCE,
        jwt_issuer=ISSUER,
    )
    tokens = [key.sign(**claims()), key.sign(**claims(ttl_s=900))]
    with capture_logs() as logs:
        async with connect(service.websocket.url) as ws:
            for token in tokens:  # the first message (to the auth gate), then a refresh
                await send_json(ws, {"type": "auth", "token": token})
                await wait_for(ws, lambda m: m["type"] in ("welcome", "auth_refreshed"))
    received = [entry for entry in logs if entry["event"] == "message received"]
    assert [(entry["type"], entry["size"]) for entry in received] == [
        ("auth", _size({"type": "auth", "token": token})) for token in tokens
    ]
    for token in tokens:
        assert token not in repr(logs)
        assert token.rsplit(".", 1)[1] not in repr(logs)  # not even the signature
