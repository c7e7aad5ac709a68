"""One connection's lifecycle, in memory: a fake WebSocket (the real one is covered end to end)."""

from __future__ import annotations

import trio
import trio.testing
from trio_websocket import CloseReason, ConnectionClosed

from tests.fakes import make_hub, open_connection


class ClosingSoonWebSocket:
    """Delivers nothing and reports the peer gone after a few scheduling rounds."""

    async def get_message(self) -> str:
        for _ in range(3):
            await trio.lowlevel.checkpoint()
        raise ConnectionClosed(CloseReason(1000, "bye"))

    async def send_message(self, message: str) -> None:
        await trio.lowlevel.checkpoint()

    async def ping(self, payload: bytes | None = None) -> None:
        await trio.sleep_forever()

    async def aclose(self, code: int = 1000, reason: str | None = None) -> None:
        await trio.lowlevel.checkpoint()


async def test_ping_requested_while_the_connection_closes_is_ignored() -> None:
    # The heartbeat may sweep between the end of a connection's tasks and its removal from
    # the hub; asking it for a ping then must not crash the service.
    # Trio shuffles the order of ready tasks, so the window is hit by repetition.
    hub = make_hub(["overview"])
    for _ in range(50):
        connection = open_connection(hub)
        served = trio.Event()

        async def serve() -> None:
            await connection.serve(ClosingSoonWebSocket(), hub)  # type: ignore[arg-type]  # noqa: B023
            served.set()  # noqa: B023

        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            while not served.is_set():
                connection.request_ping(timeout_s=1)
                await trio.lowlevel.checkpoint()
        assert connection.close_code == 1000
        assert connection.closed_by == "client"


class QuietWebSocket:
    """A peer that answers pings at once and sends nothing."""

    async def get_message(self) -> str:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async def send_message(self, message: str) -> None:
        await trio.lowlevel.checkpoint()

    async def ping(self, payload: bytes | None = None) -> None:
        await trio.sleep(0.005)

    async def aclose(self, code: int = 1000, reason: str | None = None) -> None:
        await trio.lowlevel.checkpoint()


async def test_pong_records_rtt_and_activity_and_keeps_other_state(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = make_hub(["overview"])
    connection = open_connection(hub)
    connection.dropped_messages = 7
    async with trio.open_nursery() as nursery:
        nursery.start_soon(connection.serve, QuietWebSocket(), hub)
        await trio.sleep(30)
        assert connection.idle_s() == 30
        connection.request_ping(timeout_s=1)
        await trio.sleep(1)
        assert connection.last_ping_rtt_ms == 5.0
        assert connection.idle_s() < 1
        assert connection.dropped_messages == 7
        nursery.cancel_scope.cancel()
