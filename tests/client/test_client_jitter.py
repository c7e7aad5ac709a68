"""A thundering herd, measured: 200 clients cut off at the same instant must not all come
back at the same instant. Virtual time, in-memory connections, one seeded ``random.Random``
per client (as in production, where each client has its own generator)."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable

import trio
import trio.testing

from broadcaster.client import ConnectionState, ReconnectPolicy, open_client
from tests.client_fakes import FakeBroadcaster, fake_broadcaster, within_virtual_s

VIRTUAL_DEADLINE_S = 3600

CLIENTS = 200
WINDOW_S = 0.1


async def _client(
    server: FakeBroadcaster, seed: int, *, task_status: trio.TaskStatus[None]
) -> None:
    async with open_client(
        "ws://fake/ws",
        ["overview"],
        reconnect=ReconnectPolicy(),
        rng=random.Random(seed),
        connect=server.connect,
    ) as client:
        await client.wait_status(lambda s: s.state is ConnectionState.CONNECTED)
        task_status.started()
        await trio.sleep_forever()


async def reconnect_offsets(cut: Callable[[FakeBroadcaster], Awaitable[None]]) -> list[float]:
    """Connect the herd, ``cut`` every connection at once, and return when (relative to the
    cut) each client's next connection attempt came, sorted."""
    async with fake_broadcaster() as server, trio.open_nursery() as herd:
        for seed in range(CLIENTS):
            await herd.start(_client, server, seed)
        assert len(server.attempts) == CLIENTS
        cut_at = trio.current_time()
        await cut(server)
        await server.wait_until(lambda: len(server.attempts) == 2 * CLIENTS)
        herd.cancel_scope.cancel()
    return sorted(t - cut_at for t in server.attempts[CLIENTS:])


def busiest_window(offsets: list[float], window_s: float = WINDOW_S) -> int:
    """The most attempts within any ``window_s`` (sliding, starting at each attempt)."""
    return max(
        sum(1 for other in offsets[i:] if other < start + window_s)
        for i, start in enumerate(offsets)
    )


def report(name: str, offsets: list[float]) -> tuple[float, int]:
    spread = offsets[-1] - offsets[0]
    busiest = busiest_window(offsets)
    print(
        f"\n{name}: {len(offsets)} clients came back between {offsets[0]:.3f} s and "
        f"{offsets[-1]:.3f} s after the cut: spread {spread:.3f} s, at most {busiest} "
        f"within any {WINDOW_S * 1000:.0f} ms, {len(set(offsets))} distinct instants"
    )
    return spread, busiest


@within_virtual_s(VIRTUAL_DEADLINE_S)
async def test_herd_cut_off_comes_back_spread_over_the_jitter(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def drop_all(server: FakeBroadcaster) -> None:
        for side in list(server.connections):
            await side.drop()

    offsets = await reconnect_offsets(drop_all)
    spread, busiest = report("connections dropped (backoff 5 s + jitter up to 2.5 s)", offsets)
    # Without jitter all 200 would come back exactly 5 s after the cut, in one instant.
    assert all(5.0 <= offset <= 7.5 for offset in offsets)
    assert len(set(offsets)) == CLIENTS
    assert spread > 2.0
    # Uniform over 2.5 s gives 8 per 100 ms on average.
    assert busiest <= 20


@within_virtual_s(VIRTUAL_DEADLINE_S)
async def test_herd_told_server_shutdown_comes_back_spread_over_the_jitter(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def shut_down_all(server: FakeBroadcaster) -> None:
        async with trio.open_nursery() as nursery:
            for side in list(server.connections):
                nursery.start_soon(side.shutdown, 2000)

    offsets = await reconnect_offsets(shut_down_all)
    spread, busiest = report("server_shutdown (reconnectAfterMs 2 s + jitter up to 1 s)", offsets)
    assert all(2.0 <= offset <= 3.0 for offset in offsets)
    assert len(set(offsets)) == CLIENTS
    assert spread > 0.8
    # Uniform over 1 s gives 20 per 100 ms on average.
    assert busiest <= 40


@within_virtual_s(VIRTUAL_DEADLINE_S)
async def test_herd_told_to_come_back_at_once_still_spreads_over_the_jitter_floor(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """``--reconnect-after-ms 0`` is allowed: the jitter then comes from its 2 s floor."""

    async def shut_down_all(server: FakeBroadcaster) -> None:
        async with trio.open_nursery() as nursery:
            for side in list(server.connections):
                nursery.start_soon(side.shutdown, 0)

    offsets = await reconnect_offsets(shut_down_all)
    spread, busiest = report("server_shutdown (reconnectAfterMs 0 + jitter up to 1 s)", offsets)
    # Without the floor all 200 would come back in the instant of the shutdown.
    assert all(0.0 <= offset <= 1.0 for offset in offsets)
    assert len(set(offsets)) == CLIENTS
    assert spread > 0.8
    assert busiest <= 40
