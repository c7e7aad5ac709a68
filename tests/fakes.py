"""Fakes for in-memory tests of the broadcast loop and the hub (virtual time).

The real InfluxDB source is tested against a real influxd elsewhere; these tests are about
timing and fan-out, which need a source whose answers and delays the test controls.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
import trio

from broadcaster.auth.identity import Identity
from broadcaster.broadcast.topics import Topic
from broadcaster.config import Settings
from broadcaster.errors import QueryRejected, SourceUnavailable
from broadcaster.hub import Hub
from broadcaster.ops.views import log_connection_closed
from broadcaster.service import input_limits
from broadcaster.sources.base import Series, StatementResult
from broadcaster.ws.connection import Connection
from broadcaster.ws.frames import Frame
from broadcaster.ws.policy import ClientInfo, ConnectionPolicy, OutputLimits

# The end of the range a window topic's query reads (broadcaster.broadcast.window.time_filter).
WINDOW_END = re.compile(r"time < (\d+)ms")


@dataclass
class FakeSource:
    """Answers every query with a counter value; can be made slow or down. A window topic's
    query (its ``$timeFilter`` filled) gets one row ``[time, n]`` in the last second it reads."""

    delay_s: float = 0.0
    down: bool = False
    rejected: bool = False
    calls: list[tuple[float, str]] = field(default_factory=list)
    pings: int = 0

    async def query(self, statements: str) -> list[StatementResult]:
        self.calls.append((trio.current_time(), statements))
        if self.delay_s:
            await trio.sleep(self.delay_s)
        if self.down:
            raise SourceUnavailable("InfluxDB at fake unreachable: connection refused")
        if self.rejected:
            raise QueryRejected("InfluxDB rejected the query (HTTP 400): error parsing query")
        window_end = WINDOW_END.search(statements)
        if window_end is not None:  # a window topic's read: one row, in its newest second
            newest_s = (int(window_end[1]) - 1) // 1000
            row = (newest_s * 1000, len(self.calls))
            return [StatementResult((Series(name="m", columns=("time", "n"), values=(row,)),))]
        series = Series(name="m", columns=("n",), values=((len(self.calls),),))
        return [StatementResult((series,))]

    async def ping(self) -> None:
        self.pings += 1
        if self.down:
            raise SourceUnavailable("InfluxDB at fake unreachable: connection refused")

    def count(self, statements: str) -> int:
        return sum(1 for _, query in self.calls if query == statements)


class VirtualWallClock:
    """A wall clock (Unix seconds) that runs with Trio's clock, so that aligned ticks land
    where virtual time says; it can be stepped like a real one (NTP).

    It reads ``unix_s`` when first read (in Trio), by default a multiple of every usual
    interval, so that a loop with offset 0 started then ticks at ``start + k * interval``.
    """

    def __init__(self, unix_s: float = 1_800_000_000.0) -> None:
        self._unix_s = unix_s
        self._trio_at_first_read: float | None = None

    def __call__(self) -> float:
        if self._trio_at_first_read is None:
            self._trio_at_first_read = trio.current_time()
        return self._unix_s + trio.current_time() - self._trio_at_first_read

    def step(self, seconds: float) -> None:
        """Jump ahead (or back, negative) by ``seconds``, as a clock set by NTP does."""
        self._unix_s += seconds


def value_of(results: Sequence[StatementResult]) -> Any:
    return {"n": results[0].series[0].values[0][0]}


def make_topics(*names: str) -> dict[str, Topic]:
    return {name: Topic(name=name, query=f"q:{name}", shape=value_of) for name in names}


def make_hub(
    topics: Sequence[str],
    defaults: Sequence[str] = (),
    outbox: int = 64,
    *,
    max_pending_bytes: int = 1 << 20,
    stall_timeout_s: float = 15.0,
    tenant_topics: Sequence[str] = (),
    **input_overrides: Any,
) -> PolicyHub:
    """A hub whose connections, never attached to a socket, queue all they are sent.

    ``input_overrides`` replace fields of the default :class:`InputLimits`.
    """
    hub = PolicyHub(
        topics,
        defaults,
        broadcast_interval_ms=10_000,
        max_connections=100,
        tenant_topics=tenant_topics,
    )
    hub.on_closed = log_connection_closed  # as the service wires it
    hub.policy = ConnectionPolicy(
        output=OutputLimits(
            max_messages=outbox, max_bytes=max_pending_bytes, stall_timeout_s=stall_timeout_s
        ),
        input=replace(input_limits(Settings()), **input_overrides),
        counters=hub.counters,
        containment=hub.containment,
    )
    return hub


class PolicyHub(Hub):
    """A hub that also holds the policy its test connections are built from (in the service,
    the WebSocket server holds it)."""

    policy: ConnectionPolicy


def open_connection(hub: PolicyHub, identity: Identity | None = None) -> Connection:
    """Build, register and admit a connection as the WebSocket server does (``identity``: as
    if it had sent a valid token carrying it)."""
    connection = Connection(
        hub.new_connection_id(), ClientInfo(user_agent="test", ip="127.0.0.1"), hub.policy
    )
    connection.identity = identity
    hub.register(connection)
    hub.admit(connection)
    return connection


def sent_messages(connection: Connection) -> list[dict[str, Any]]:
    """Decode and remove everything queued for ``connection``."""
    return [orjson.loads(item.text) for item in connection.drain() if isinstance(item, Frame)]
