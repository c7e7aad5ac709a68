"""Notifications from the real service to a real HTTP receiver (real clock, real sockets).

The values come from an in-process FakeSource that can be made to fail: these tests are about
what the service notifies when queries fail, not about InfluxDB (the source health's outcomes
from the real InfluxQL source are covered in tests/sources).
"""

from __future__ import annotations

import os
import signal
from functools import partial
from typing import Any

import trio

from broadcaster.ops.notify.sender import SHUTDOWN_FLUSH_S
from broadcaster.service import RunningService, serve
from tests.fakes import FakeSource, make_topics
from tests.ops.receivers import JsonReceiver
from tests.services import make_settings
from tests.wsclient import connect, eventually, next_message, raw_handshake


async def _receiver(nursery: trio.Nursery, **options: Any) -> JsonReceiver:
    receiver = JsonReceiver(**options)
    await nursery.start(receiver.serve)
    return receiver


async def _serve(
    nursery: trio.Nursery, stop: trio.Event, source: FakeSource | None = None, **overrides: Any
) -> tuple[RunningService, trio.Event]:
    """The service in ``nursery``; the returned event is set once ``serve`` has returned."""
    settings = make_settings(default_topics="a", **overrides)
    finished = trio.Event()

    async def run(task_status: trio.TaskStatus[RunningService]) -> None:
        await serve(
            settings,
            catalog=make_topics("a"),
            source=source or FakeSource(),
            stop=stop,
            task_status=task_status,
        )
        finished.set()

    running: RunningService = await nursery.start(run)
    return running, finished


def _task_names() -> list[str]:
    names = []
    pending = [trio.lowlevel.current_root_task()]
    while pending:
        task = pending.pop()
        names.append(task.name)
        pending.extend(child for n in task.child_nurseries for child in n.child_tasks)
    return names


async def test_started_and_stopping_on_sigterm_with_the_clients_told(
    nursery: trio.Nursery,
) -> None:
    receiver = await _receiver(nursery)
    stop = trio.Event()
    settings = make_settings(notify_urls=receiver.url(), default_topics="a")
    running: RunningService = await nursery.start(
        partial(
            serve,
            settings,
            catalog=make_topics("a"),
            source=FakeSource(),
            stop=stop,
            handle_signals=True,
        )
    )
    await receiver.wait_until(accepted=1)
    assert receiver.titles() == ["service_started: broadcaster started"]
    assert f"websocket_url: {running.websocket.url}" in receiver.accepted[0]["message"]

    async with connect(running.websocket.url) as ws:
        await next_message(ws)  # welcome
        os.kill(os.getpid(), signal.SIGTERM)
        await receiver.wait_until(accepted=2)

    stopping = receiver.accepted[1]
    assert stopping["title"] == (
        "service_stopping: broadcaster stopping (SIGTERM), 1 clients told to reconnect"
    )
    assert "signal: SIGTERM" in stopping["message"]
    assert "clients_told: 1" in stopping["message"]


async def test_database_down_and_recovered_once_per_transition(nursery: trio.Nursery) -> None:
    receiver = await _receiver(nursery)
    source = FakeSource()
    running, _ = await _serve(
        nursery,
        trio.Event(),
        source,
        notify_urls=receiver.url(),
        broadcast_interval_ms=50,
        notify_after_failures=3,
    )
    async with connect(running.websocket.url) as ws:
        await next_message(ws)
        source.down = True
        await receiver.wait_until(accepted=2)  # service_started, database_down
        ticks = running.loop.ticks
        await eventually(lambda: running.loop.ticks >= ticks + 10)  # ten more failed ticks
        source.down = False
        await receiver.wait_until(accepted=3)
        ticks = running.loop.ticks
        await eventually(lambda: running.loop.ticks >= ticks + 10)  # ten good ones

    titles = receiver.titles()
    assert titles[1] == "database_down: InfluxDB unreachable for 3 queries"
    assert titles[2].startswith("database_recovered: InfluxDB answering again after ")
    assert len(titles) == 3


async def test_clients_gone_and_heartbeat_failures_from_the_service(
    nursery: trio.Nursery,
) -> None:
    receiver = await _receiver(nursery)
    running, _ = await _serve(
        nursery,
        trio.Event(),
        notify_urls=receiver.url(),
        heartbeat_interval_ms=100,
        connection_timeout_ms=300,
        notify_heartbeat_failures=0,
        notify_no_clients_after_ms=500,
    )
    endpoint = running.websocket
    silent = await trio.to_thread.run_sync(raw_handshake, endpoint.host, endpoint.port)
    try:
        await receiver.wait_until(accepted=3)  # started, heartbeat_failures, clients_gone
    finally:
        silent.close()

    titles = receiver.titles()
    assert titles[1] == (
        "heartbeat_failures: 1 connections closed for silence within one heartbeat interval"
    )
    assert titles[2] == "clients_gone: no clients for 0.5 s"


async def test_a_receiver_that_never_answers_delays_neither_ticks_nor_shutdown(
    nursery: trio.Nursery,
) -> None:
    receiver = await _receiver(nursery, hang=True)
    stop = trio.Event()
    running, finished = await _serve(
        nursery, stop, notify_urls=receiver.url(rto="60"), broadcast_interval_ms=50
    )
    await receiver.wait_until(requests=1)  # service_started: held by the receiver
    async with connect(running.websocket.url) as ws:
        await next_message(ws)
        ticks = running.loop.ticks
        await eventually(lambda: running.loop.ticks >= ticks + 5, timeout_s=5)
    await eventually(lambda: running.hub.tracked_count() == 0)

    asked = trio.current_time()
    stop.set()
    with trio.fail_after(SHUTDOWN_FLUSH_S + 3):
        await finished.wait()
    # No client to wait for: the shutdown took the stuck notifications' SHUTDOWN_FLUSH_S.
    assert trio.current_time() - asked < SHUTDOWN_FLUSH_S + 1


async def test_without_urls_no_task_and_nothing_changes(nursery: trio.Nursery) -> None:
    stop = trio.Event()
    running, finished = await _serve(nursery, stop)
    names = _task_names()
    assert any("serve_probes" in name for name in names)  # the walk sees the service's tasks
    assert not any(name.startswith("broadcaster.ops.notify") for name in names)
    async with connect(running.websocket.url) as ws:
        await next_message(ws)
    stop.set()
    with trio.fail_after(10):
        await finished.wait()
