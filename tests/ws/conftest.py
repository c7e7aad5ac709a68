"""Fixtures of the socket-side tests: a hub in memory, and the WebSocket server on it.

The server is real (loopback, port 0); the hub behind it is the in-memory one from
tests/fakes.py, with one topic and no broadcast loop: these tests are about the socket side.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial

import pytest
import trio

from broadcaster.ws.server import WebSocketEndpoint, serve_websockets
from tests.fakes import PolicyHub, make_hub


@pytest.fixture
async def hub() -> PolicyHub:
    """An in-memory hub with the one topic ``overview``."""
    return make_hub(["overview"])


@pytest.fixture
async def endpoint(nursery: trio.Nursery, hub: PolicyHub) -> AsyncIterator[WebSocketEndpoint]:
    """The WebSocket server on ``hub``, on 127.0.0.1 and a free port, in the test's nursery."""
    served: WebSocketEndpoint = await nursery.start(
        partial(serve_websockets, hub, hub.policy, "127.0.0.1", 0)
    )
    yield served
    served.stop_accepting()
