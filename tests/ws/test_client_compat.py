"""The server speaks standard WebSocket: other people's clients work against it.

Each client, against the real service over loopback: the handshake and ``welcome``, a
subscription and an update, a WebSocket-level ping answered by a pong frame, a protocol
``ping``, a close handshake it starts (1000), and a close the server starts (1009 for an
oversized message). trio-websocket is the client of most other tests and the browser
(Chromium) that of tests/client/test_dashboard_browser.py; here: Python `websockets` and npm `ws`.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import trio
from websockets.asyncio.client import connect as websockets_connect
from websockets.exceptions import ConnectionClosed

from tests import REPO
from tests.node_ws import NODE_MODULES, ensure_node_ws
from tests.services import PaddedSource, StartService, write_topics_file

MAX_MESSAGE_BYTES = 1024
EXPECTED = {
    "welcome": "welcome",
    "confirmed": ["feed"],
    "updateTopic": "feed",
    "pongFrame": "are you there",
    "pongId": 7,
    "clientCloseCode": 1000,
    "oversizedCloseCode": 1009,
}


async def start(start_service: StartService, tmp_path: Path) -> str:
    service = await start_service(
        source=PaddedSource(pad_bytes=100),
        topics_file=write_topics_file(tmp_path, feed="SELECT feed"),
        default_topics="",
        broadcast_interval_ms=100,
        max_message_bytes=MAX_MESSAGE_BYTES,
    )
    return service.websocket.url


async def websockets_session(url: str) -> dict[str, Any]:
    """The same steps as tests/js/ws_compat_client.mjs, with Python `websockets` (asyncio)."""

    async def next_of(ws: Any, kind: str) -> dict[str, Any]:
        while True:
            message: dict[str, Any] = json.loads(await ws.recv())
            if message["type"] == kind:
                return message

    result: dict[str, Any] = {}
    async with websockets_connect(url) as ws:
        result["welcome"] = (await next_of(ws, "welcome"))["type"]
        await ws.send(json.dumps({"type": "subscribe", "topics": ["feed"]}))
        result["confirmed"] = (await next_of(ws, "subscription_confirmed"))["topics"]
        result["updateTopic"] = (await next_of(ws, "metrics_update"))["topic"]
        await asyncio.wait_for(await ws.ping(b"are you there"), timeout=5)
        result["pongFrame"] = "are you there"
        await ws.send(json.dumps({"type": "ping", "id": 7}))
        result["pongId"] = (await next_of(ws, "pong"))["id"]
        await ws.close(1000, "done")
        result["clientCloseCode"] = ws.close_code
    async with websockets_connect(url) as ws:
        await next_of(ws, "welcome")
        await ws.send("x" * 2 * MAX_MESSAGE_BYTES)
        try:
            while True:
                await ws.recv()
        except ConnectionClosed as closed:
            result["oversizedCloseCode"] = closed.rcvd.code if closed.rcvd else None
    return result


async def test_python_websockets_client(start_service: StartService, tmp_path: Path) -> None:
    url = await start(start_service, tmp_path)
    with trio.fail_after(30):
        result = await trio.to_thread.run_sync(
            lambda: asyncio.run(asyncio.wait_for(websockets_session(url), timeout=20))
        )
    assert result == EXPECTED


async def test_node_ws_client(start_service: StartService, tmp_path: Path) -> None:
    node = await trio.to_thread.run_sync(ensure_node_ws)
    url = await start(start_service, tmp_path)
    script = REPO / "tests" / "js" / "ws_compat_client.mjs"
    done = await trio.run_process(
        [node, str(script), url, "feed", str(2 * MAX_MESSAGE_BYTES)],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env={**os.environ, "BENCH_NODE_MODULES": str(NODE_MODULES)},
    )
    assert done.returncode == 0, done.stderr.decode()
    assert json.loads(done.stdout) == EXPECTED
