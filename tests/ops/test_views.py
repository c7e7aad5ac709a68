"""The three views of the counters (status API, /metrics, stats line) are generated from one
snapshot: they agree, on every counter and on what "active" means; /health's websocket part
is real."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from prometheus_client import CollectorRegistry

from broadcaster.counters import COUNTERS
from broadcaster.ops.http import status_summary
from broadcaster.ops.metrics import ServiceCollector
from broadcaster.ops.stats import stats_fields
from broadcaster.protocol import CloseCode
from broadcaster.sources.health import SourceHealth
from tests.fakes import FakeSource, PolicyHub, make_hub, open_connection


def _metrics(hub: PolicyHub) -> dict[str, float]:
    """Every unlabelled sample /metrics would show, by sample name."""
    # The collector reads only each topic's query counts and each channel's asOf from the
    # loop: a stand-in suffices.
    loop: Any = SimpleNamespace(
        states={t: SimpleNamespace(queries=0, failures=0) for t in hub.topics}, channels={}
    )
    health = SourceHealth(FakeSource(), max_age_s=20, ping_timeout_s=5)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServiceCollector(hub, health, loop))
    return {
        sample.name: sample.value
        for family in registry.collect()
        for sample in family.samples
        if not sample.labels
    }


def _stats(hub: PolicyHub) -> dict[str, Any]:
    health = SourceHealth(FakeSource(), max_age_s=20, ping_timeout_s=5)
    return stats_fields(hub.snapshot(), health, previous_broadcasts=0)


async def test_the_three_views_agree_while_a_connection_is_closing() -> None:
    hub = make_hub(["overview"], defaults=["overview"])
    closing, _ = open_connection(hub), open_connection(hub)
    closing.close(CloseCode.SLOW_CONSUMER, "outbox full")  # closing, not yet forgotten
    summary = status_summary(hub.snapshot())
    metrics = _metrics(hub)
    stats = _stats(hub)
    assert (
        summary["activeConnections"]
        == stats["active"]
        == metrics["broadcaster_connections_active"]
        == 1
    )
    assert (
        summary["trackedConnections"]
        == stats["tracked"]
        == metrics["broadcaster_connections_tracked"]
        == 2
    )


async def test_every_counter_is_in_every_view_with_the_same_value() -> None:
    hub = make_hub(["overview"])
    for value, spec in enumerate(COUNTERS, start=1):
        setattr(hub.counters, spec.name, value)
    summary = status_summary(hub.snapshot())
    metrics = _metrics(hub)
    stats = _stats(hub)
    for value, spec in enumerate(COUNTERS, start=1):
        assert summary[spec.json] == stats[spec.name] == metrics[f"{spec.metric}_total"] == value


async def test_websocket_health_needs_the_accept_loop_room_and_no_shutdown() -> None:
    hub = make_hub(["overview"])
    assert not hub.snapshot().healthy  # the accept loop is not running yet
    hub.set_accept_loop_running(True)
    assert hub.snapshot().healthy
    hub.max_connections = 1
    open_connection(hub)
    assert not hub.snapshot().healthy  # at capacity
    hub.max_connections = 2
    assert hub.snapshot().healthy
    hub.shutdown_all("server shutting down", 1000)
    assert not hub.snapshot().healthy
