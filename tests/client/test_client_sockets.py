"""The client over real loopback sockets, against a bare trio-websocket server that closes
every connection first, right after its welcome: the case where trio-websocket 0.12's own
client leaves its socket open (see broadcaster/client/link.py). Real clock, so every wait
has a deadline.

A socket left to the garbage collector fails the test twice over: its ResourceWarning is an
error here (``filterwarnings = error``), and one kept alive raises the count of open file
descriptors.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
from functools import partial

import trio
from trio_websocket import ConnectionClosed, WebSocketRequest, WebSocketServer, serve_websocket

from broadcaster.client import ConnectionState, ReconnectPolicy, open_client
from tests.wsclient import eventually

RECONNECTS = 150


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_many_server_first_closes_leak_no_socket(nursery: trio.Nursery) -> None:
    accepted = 0

    async def welcome_then_close(request: WebSocketRequest) -> None:
        nonlocal accepted
        ws = await request.accept()
        accepted += 1
        welcome = {"type": "welcome", "connectionId": f"ws_{accepted}_0", "subscribed": []}
        # On a loaded machine the client may give up on a slow handshake and go first: this
        # test server must then end quietly (the client's sockets are what is counted).
        with contextlib.suppress(ConnectionClosed):
            await ws.send_message(json.dumps(welcome))
            await ws.aclose(1001, "server shutting down")

    server: WebSocketServer = await nursery.start(
        partial(serve_websocket, welcome_then_close, "127.0.0.1", 0, ssl_context=None)
    )
    url = f"ws://127.0.0.1:{server.port}/ws"
    fast = ReconnectPolicy(base_delay_s=0.002, max_delay_s=0.002, jitter_ratio=0)
    # With the garbage collector off, a socket that is not closed stays open: a leak shows
    # up in the count instead of being hidden by a collection.
    gc.disable()
    try:
        with trio.fail_after(60):
            before = open_fds()
            async with open_client(url, ["cpu"], reconnect=fast) as client:
                await eventually(lambda: accepted >= 10, timeout_s=30)
                early = open_fds()
                await eventually(lambda: accepted >= 10 + RECONNECTS, timeout_s=50)
                late = open_fds()
                assert client.status.state is not ConnectionState.SERVER_DOWN
            await trio.testing.wait_all_tasks_blocked()
            after = open_fds()
    finally:
        gc.enable()
    print(
        f"\nopen fds: {before} before, {early} after 10 connections, {late} after "
        f"{RECONNECTS} more, {after} after close"
    )
    assert late <= early + 2
    assert after <= before + 2
