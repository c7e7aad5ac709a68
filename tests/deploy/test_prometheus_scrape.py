"""The kit against the running service: a real Prometheus scrapes it and loads the alert
rules, and every metric the dashboard and the rules name is on a live /metrics.

The service runs in the test (real HTTP and WebSocket servers on 127.0.0.1, values from an
in-process source: the database is not what these tests are about). Prometheus is the
Debian package's binary, in a temporary directory, on a free port, scraping every second;
it is stopped by its PID.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy.tools import (
    ALERTS,
    alert_rules,
    as_promql,
    dashboard_expressions,
    referenced_metrics,
    tool,
)
from tests.services import StartService
from tests.wsclient import connect, eventually, next_message

STARTUP_TIMEOUT_S = 30
STOP_TIMEOUT_S = 10
# Suffixes a family's samples carry beyond its name, by family type.
SAMPLE_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@asynccontextmanager
async def running_prometheus(directory: Path, target: str) -> AsyncIterator[str]:
    """Prometheus scraping ``target`` every second with the kit's alert rules; its URL."""
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [{"job_name": "broadcaster", "static_configs": [{"targets": [target]}]}],
    }
    (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
    address = f"127.0.0.1:{_free_port()}"
    log = (directory / "prometheus.log").open("wb")
    process = await trio.lowlevel.open_process(
        [
            tool("prometheus"),
            f"--config.file={directory / 'prometheus.yml'}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address={address}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield f"http://{address}"
    finally:
        process.terminate()
        with trio.move_on_after(STOP_TIMEOUT_S) as waiting:
            await process.wait()
        if waiting.cancelled_caught:
            process.kill()
            await process.wait()
        log.close()


async def _query(client: httpx.AsyncClient, expression: str) -> dict[str, Any]:
    response = await client.get("/api/v1/query", params={"query": expression})
    response.raise_for_status()  # 503 "Service Unavailable" (plain text) while it starts
    answer: dict[str, Any] = response.json()
    return answer


async def _value(client: httpx.AsyncClient, expression: str) -> float | None:
    """The value of a one-series instant query, or None while Prometheus has none."""
    try:
        result = (await _query(client, expression))["data"]["result"]
    except (httpx.TransportError, httpx.HTTPStatusError):  # not listening or not ready yet
        return None
    return float(result[0]["value"][1]) if len(result) == 1 else None


@pytest.mark.slow
async def test_a_real_prometheus_scrapes_the_service_and_evaluates_the_kit(
    start_service: StartService, tmp_path: Path
) -> None:
    service = await start_service()
    target = service.http_url.removeprefix("http://")
    async with (
        connect(service.websocket.url) as ws,
        running_prometheus(tmp_path, target) as prometheus,
        httpx.AsyncClient(base_url=prometheus, timeout=5) as client,
    ):
        await next_message(ws)  # welcome: one client connected

        async def scraped() -> bool:
            active = await _value(client, "broadcaster_connections_active")
            memory = await _value(client, "process_resident_memory_bytes")
            return active == 1 and memory is not None and memory > 10 * 1024 * 1024

        await eventually(scraped, timeout_s=STARTUP_TIMEOUT_S)
        assert await _value(client, f'up{{instance="{target}"}}') == 1

        # The rules are loaded and evaluated without error.
        async def rules_evaluated() -> bool:
            groups = (await client.get("/api/v1/rules")).json()["data"]["groups"]
            rules = [rule for group in groups for rule in group["rules"]]
            return len(rules) == len(alert_rules()) and all(
                rule["health"] == "ok" for rule in rules
            )

        await eventually(rules_evaluated, timeout_s=STARTUP_TIMEOUT_S)

        # Every expression of the dashboard and the rules is PromQL this Prometheus accepts.
        expressions = [as_promql(e) for e in dashboard_expressions()]
        expressions += [rule["expr"] for rule in alert_rules()]
        for expression in expressions:
            answer = await _query(client, expression)
            assert answer["status"] == "success", (expression, answer)


async def test_every_metric_the_kit_names_is_on_a_live_metrics_page(
    start_service: StartService,
) -> None:
    service = await start_service()
    async with httpx.AsyncClient() as client:
        page = (await client.get(f"{service.http_url}/metrics")).text
    families = {family.name: family.type for family in text_string_to_metric_families(page)}
    exposed = set(families)
    for name, kind in families.items():
        exposed |= {name + suffix for suffix in SAMPLE_SUFFIXES.get(kind, ())}
    referenced = referenced_metrics()
    missing = {name: sorted(where) for name, where in referenced.items() if name not in exposed}
    assert missing == {}
    # The kit covers what the issue asks for (and the parse above found them).
    for name in (
        "broadcaster_connections_active",
        "broadcaster_broadcasts_total",
        "broadcaster_tick_duration_seconds_bucket",
        "broadcaster_query_duration_seconds_bucket",
        "broadcaster_update_age_seconds",
        "broadcaster_slow_consumers_closed_total",
        "broadcaster_heartbeat_timeouts_total",
        "process_resident_memory_bytes",
        "process_open_fds",
    ):
        assert name in referenced, name
