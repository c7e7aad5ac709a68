"""``--max-connections-per-ip``: one address cannot take every connection slot.

The whole service in-process, real WebSocket clients over loopback (loopback is not exempt).
"""

from __future__ import annotations

import pytest
import trio
from trio_websocket import ConnectionClosed

from broadcaster.service import RunningService
from tests.services import StartService
from tests.wsclient import connect, next_message


def ws_url(service: RunningService) -> str:
    return f"ws://127.0.0.1:{service.websocket.port}/ws"


async def test_the_connection_over_the_address_cap_is_closed_with_1013(
    start_service: StartService,
) -> None:
    service = await start_service(max_connections_per_ip=2, default_topics="")
    async with connect(ws_url(service)) as first, connect(ws_url(service)) as second:
        for ws in (first, second):
            assert (await next_message(ws))["type"] == "welcome"
        async with connect(ws_url(service)) as third:
            with trio.fail_after(10), pytest.raises(ConnectionClosed) as closed:
                await third.get_message()
        reason = closed.value.reason
        assert reason is not None
        assert (reason.code, reason.reason) == (1013, "too many connections from this address")
        assert service.hub.counters.connections_refused == 1
    # Once those have gone, the address has room again.
    with trio.fail_after(10):
        await service.hub.wait_until_empty()
    async with connect(ws_url(service)) as again:
        assert (await next_message(again))["type"] == "welcome"


async def test_no_cap_by_default(start_service: StartService) -> None:
    service = await start_service(default_topics="")
    async with (
        connect(ws_url(service)) as a,
        connect(ws_url(service)) as b,
        connect(ws_url(service)) as c,
    ):
        for ws in (a, b, c):
            assert (await next_message(ws))["type"] == "welcome"
    assert service.hub.counters.connections_refused == 0
