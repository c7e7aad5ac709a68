"""What operators read in the logs: the periodic stats line and the disconnect summary."""

from __future__ import annotations

import json
import subprocess
import sys
from functools import partial

import trio
import trio.testing
from structlog.testing import capture_logs

from broadcaster.channels import Channel
from broadcaster.ops.stats import log_stats
from broadcaster.protocol import CloseCode, iso_from_unix_ms
from broadcaster.service import serve
from broadcaster.sources.health import SourceHealth
from broadcaster.ws.frames import Frame
from tests.fakes import FakeSource, make_hub, open_connection
from tests.services import make_settings


async def test_one_stats_line_per_interval_only_while_clients_are_connected(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = make_hub(["overview"], defaults=["overview"])
    health = SourceHealth(FakeSource(), max_age_s=20, ping_timeout_s=5)
    with capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            await nursery.start(
                lambda task_status: log_stats(hub, health, interval_s=60, task_status=task_status)
            )
            await trio.sleep(150)  # two intervals with nobody connected: no line
            connection = open_connection(hub)
            hub.publish(
                Channel("overview", None), Frame('{"type":"metrics_update"}', topic="overview")
            )
            await trio.sleep(60)  # the line at 180 s
            connection.close(CloseCode.NORMAL, "bye")
            hub.close(connection)
            await trio.sleep(120)  # nobody again: no line
            nursery.cancel_scope.cancel()
    stats = [entry for entry in logs if entry["event"] == "stats"]
    assert len(stats) == 1
    assert stats[0]["active"] == 1
    assert stats[0]["broadcasts"] == 1
    assert stats[0]["broadcasts_since_last"] == 1
    assert stats[0]["subscribers"] == {"overview": 1}
    assert stats[0]["influxdb_healthy"] is True


async def test_disconnect_logs_code_reason_summary_and_remaining() -> None:
    hub = make_hub(["overview"], defaults=["overview"])
    leaving, staying = open_connection(hub), open_connection(hub)
    hub.publish(Channel("overview", None), Frame('{"type":"metrics_update"}', topic="overview"))
    leaving.close(CloseCode.SLOW_CONSUMER, "outbox full")
    with capture_logs() as logs:
        hub.close(leaving)
    (entry,) = logs
    assert entry["event"] == "connection closed"
    assert entry["code"] == 4008
    assert entry["reason"] == "outbox full"
    assert entry["closed_by"] == "server"
    assert entry["remaining"] == 1
    assert entry["connection_id"] == leaving.id
    assert entry["subscriptions"] == ["overview"]
    assert entry["connectedAt"] == iso_from_unix_ms(leaving.connected_at_unix_ms)
    assert entry["broadcastCount"] == 1
    assert entry["lastBroadcast"] == iso_from_unix_ms(leaving.last_broadcast_unix_ms)
    assert (entry["errorCount"], entry["lastError"], entry["droppedMessages"]) == (0, None, 0)
    assert entry["clientInfo"] == {"userAgent": "test", "ip": "127.0.0.1"}
    assert staying in hub.connections_now()


def test_library_log_lines_are_rendered_like_ours() -> None:
    script = (
        "import logging, structlog\n"
        "from broadcaster.logs import configure_logging\n"
        "configure_logging('json', 'info')\n"
        "logging.getLogger('hypercorn.error').info('chatty')\n"
        "logging.getLogger('hypercorn.error').warning('lost a worker')\n"
        "structlog.get_logger('broadcaster').info('ours', n=1)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=30
    )
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert [line["event"] for line in lines] == ["lost a worker", "ours"]
    assert lines[0]["logger"] == "hypercorn.error"
    assert lines[0]["level"] == "warning"
    assert lines[1]["n"] == 1


def test_a_library_exception_keeps_its_traceback_in_json() -> None:
    script = (
        "import logging\n"
        "from broadcaster.logs import configure_logging\n"
        "configure_logging('json', 'info')\n"
        "try:\n"
        "    1 / 0\n"
        "except ZeroDivisionError:\n"
        "    logging.getLogger('quart.app').exception('request failed')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=30
    )
    (line,) = [json.loads(line) for line in result.stderr.splitlines()]
    assert line["event"] == "request failed"
    assert line["level"] == "error"
    assert line["exception"].startswith("Traceback (most recent call last):")
    assert line["exception"].endswith("ZeroDivisionError: division by zero")


async def test_the_stopped_line_carries_the_totals_and_the_connection_errors() -> None:
    stop = trio.Event()
    with capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(serve, make_settings(), stop=stop, source=FakeSource()))
            stop.set()
    (stopped,) = [entry for entry in logs if entry["event"] == "service stopped"]
    assert stopped["connections_created"] == 0
    assert stopped["connection_errors"] == dict.fromkeys(
        ("handshake", "reader", "handler", "flusher", "heartbeat", "lifecycle", "http"), 0
    )
