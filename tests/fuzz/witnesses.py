"""The witnesses of a fuzz run: a bystander client and a health probe.

The ``Bystander`` is a well-behaved client: subscribed to one topic, it must get every
update (``seq`` strictly +1) and stay connected; it sends a JSON ping every 100 ms and keeps
the round-trip times. The ``HealthProbe`` asks ``/health`` twice a second; a request that
gets no answer is a failure.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

import httpx
import trio
from trio_websocket import ConnectionClosed

from tests.fuzz.service import TOPIC
from tests.wsclient import connect, next_message, send_json

PING_EVERY_S = 0.1
SILENCE_LIMIT_S = 10.0
HEALTH_EVERY_S = 0.5
HEALTH_TIMEOUT_S = 5.0


def percentile(values: list[float], fraction: float) -> float | None:
    """The ``fraction`` quantile (nearest rank), None without values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


@dataclass
class Bystander:
    """A client that must not notice the fuzzing: every update, no disconnect."""

    url: str
    topic: str = TOPIC
    seqs: list[int] = field(default_factory=list)
    update_times: list[float] = field(default_factory=list)
    rtts_ms: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    _ping_sent: dict[int, float] = field(default_factory=dict)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, check the welcome, report started, then watch until cancelled."""
        async with connect(self.url) as ws:
            welcome = await next_message(ws)
            if self.topic not in welcome.get("subscribed", []):
                await send_json(ws, {"type": "subscribe", "topics": [self.topic]})
            task_status.started()
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._ping, ws)
                    await self._receive(ws)
                    nursery.cancel_scope.cancel()
            except* (OSError, trio.BrokenResourceError) as group:  # the service died under us
                self.failures.append(f"bystander lost its connection: {group.exceptions[0]!r}")

    async def _ping(self, ws: Any) -> None:
        number = 0
        while True:
            number += 1
            self._ping_sent[number] = trio.current_time()
            try:
                await send_json(ws, {"type": "ping", "id": number})
            except ConnectionClosed:
                return
            await trio.sleep(PING_EVERY_S)

    async def _receive(self, ws: Any) -> None:
        while True:
            try:
                message = await next_message(ws, timeout_s=SILENCE_LIMIT_S)
            except ConnectionClosed as closed:
                self.failures.append(f"bystander disconnected: {closed.reason}")
                return
            except trio.TooSlowError:
                self.failures.append(f"bystander heard nothing for {SILENCE_LIMIT_S} s")
                return
            self._handle(message)

    def _handle(self, message: dict[str, Any]) -> None:
        now = trio.current_time()
        kind = message.get("type")
        if kind == "metrics_update" and message.get("topic") == self.topic:
            seq = int(message["seq"])
            if self.seqs and seq != self.seqs[-1] + 1:
                self.failures.append(f"bystander missed updates: seq {self.seqs[-1]} -> {seq}")
            self.seqs.append(seq)
            self.update_times.append(now)
        elif kind == "pong" and isinstance(message.get("id"), int):
            sent = self._ping_sent.pop(message["id"], None)
            if sent is not None:
                self.rtts_ms.append((now - sent) * 1000)
        elif kind == "error":
            self.errors.append(message)

    def updates_between(self, start: float, end: float) -> int:
        """Updates received in ``[start, end]`` (Trio clock)."""
        return sum(1 for moment in self.update_times if start <= moment <= end)

    def rtt_summary(self) -> str:
        """``p50 / p99 / max`` of the ping round trips, in ms."""
        if not self.rtts_ms:
            return "no pongs"
        p50, p99 = percentile(self.rtts_ms, 0.5), percentile(self.rtts_ms, 0.99)
        return (
            f"{len(self.rtts_ms)} pings, RTT p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
            f"max {max(self.rtts_ms):.1f} ms, mean {statistics.fmean(self.rtts_ms):.1f} ms"
        )


@dataclass
class HealthProbe:
    """Asks ``/health`` every ``HEALTH_EVERY_S``; any request that gets no answer is a failure."""

    url: str
    timeout_s: float = HEALTH_TIMEOUT_S
    answers: dict[int, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    async def run(self) -> None:
        while True:
            await self.check()
            await trio.sleep(HEALTH_EVERY_S)

    async def check(self) -> bool:
        """One request on a new connection (``Connection: close``); True if it was answered."""
        try:
            async with httpx.AsyncClient(timeout=self.timeout_s) as client:
                response = await client.get(f"{self.url}/health", headers={"Connection": "close"})
        except httpx.HTTPError as error:
            self.failures.append(f"/health did not answer: {type(error).__name__}: {error}")
            return False
        self.answers[response.status_code] = self.answers.get(response.status_code, 0) + 1
        return True
