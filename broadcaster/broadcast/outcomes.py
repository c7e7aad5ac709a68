"""What one refresh of a channel ends with, and the small pure helpers that classify it.

``_read`` gives a :class:`Value` or a :class:`Failure`; encoding turns a value into an
:class:`Update` (the frame, once for every subscriber) or a failure. Split from the loop so
that the loop reads as its pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import structlog

from broadcaster import protocol
from broadcaster.channels import Channel
from broadcaster.errors import QueryRejected, SourceError, SourceResponseError
from broadcaster.protocol import FailureCause

log = structlog.get_logger("broadcaster.broadcast.loop")


@dataclass(frozen=True, slots=True)
class Value:
    """A topic's shaped value and when it was read."""

    data: Any
    read_at_ms: float


@dataclass(frozen=True, slots=True)
class Update:
    """A good value, encoded: the frame text every subscriber gets."""

    text: str
    data: Any


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a topic has no new value this time."""

    cause: FailureCause
    text: str


def log_fields(channel: Channel) -> dict[str, str]:
    """How a log line names a channel: its topic, and its tenant if it has one."""
    if channel.tenant is None:
        return {"topic": channel.topic}
    return {"topic": channel.topic, "tenant": channel.tenant}


def as_of_unix_s(data: Any) -> float | None:
    """The ``asOf`` a topic's data gives (the built-in topics': its newest point), as Unix
    seconds; None when the data says nothing of its age or says it unreadably."""
    as_of = data.get("asOf") if isinstance(data, dict) else None
    if not isinstance(as_of, str):
        return None
    try:
        return datetime.fromisoformat(as_of).timestamp()
    except ValueError:
        return None


def cause_of(error: SourceError) -> FailureCause:
    """The wire's word for a source error."""
    if isinstance(error, QueryRejected):
        return FailureCause.QUERY_REJECTED
    if isinstance(error, SourceResponseError):
        return FailureCause.BAD_RESPONSE
    return FailureCause.UNAVAILABLE


def internal_failure(channel: Channel, exc: Exception) -> Failure:
    """A bug reached by one channel's data, logged, as that channel's failure."""
    log.error("topic refresh failed", **log_fields(channel), exc_info=exc)
    return Failure(
        FailureCause.INTERNAL, f"internal error ({type(exc).__name__}); see the service log"
    )


def stale_copy(update_text: str, seq: int, epoch: str) -> str:
    """The ``metrics_update`` ``update_text`` (this node's or another's) sent again under a
    new ``seq`` with ``"stale": true``: what subscribers get after a failed query.

    Parsed here, on the failure path only, so that no node decodes the frames it relays.
    """
    message = orjson.loads(update_text)
    return protocol.metrics_update(
        message["topic"], seq, message["timestamp"], message["data"], stale=True, epoch=epoch
    )


def error_description(error_text: str) -> str:
    """``code: message`` of an ``error`` frame, as a connection's last error notes it."""
    message = orjson.loads(error_text)
    return f"{message['code']}: {message['message']}"
