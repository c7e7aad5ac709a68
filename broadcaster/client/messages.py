"""The client's side of the wire protocol (docs/protocol.md): decode server messages, encode
its own.

Decoding is lenient, as the protocol asks of clients: unknown fields and message types are
ignored, and a malformed message is reported as ``None`` for the caller to log and skip,
never an exception that would take the connection down.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from broadcaster.protocol import MAX_TOPICS_PER_MESSAGE

JSON = dict[str, Any]


@dataclass(frozen=True, slots=True)
class MetricsUpdate:
    """One ``metrics_update``: typed fields, and the whole decoded message in ``message``.

    For a window topic, each ``metrics_append`` is merged and delivered as the whole window:
    a ``MetricsUpdate`` whose ``data`` (and ``message["data"]``) is the merged window and whose
    ``message`` is the append's, with ``type`` ``metrics_update`` (see
    :mod:`broadcaster.client.window`).

    Attributes:
        topic: the topic.
        seq: the topic's query counter on the server (see docs/protocol.md, ``seq``).
        timestamp: when the value was read from InfluxDB (ISO 8601 UTC).
        stale: the last good value, resent because the latest query failed.
        data: the value; its shape depends on the topic.
        message: the message as received, unknown fields included.
    """

    topic: str
    seq: int
    timestamp: str
    stale: bool
    data: Any
    message: JSON

    def __getitem__(self, key: str) -> Any:
        """``update["data"]``: read it like the dict it came from."""
        return self.message[key]


def decode(raw: str | bytes) -> JSON | None:
    """A server frame as a dict with a string ``type``, or None if it is not one."""
    try:
        message = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        return None
    return message


def as_update(message: JSON) -> MetricsUpdate | None:
    """A decoded ``metrics_update`` as a :class:`MetricsUpdate`, or None if malformed."""
    topic, seq = message.get("topic"), message.get("seq")
    timestamp, stale = message.get("timestamp"), message.get("stale", False)
    if (
        not isinstance(topic, str)
        or not isinstance(seq, int)
        or isinstance(seq, bool)
        or not isinstance(timestamp, str)
        or not isinstance(stale, bool)
        or "data" not in message
    ):
        return None
    return MetricsUpdate(topic, seq, timestamp, stale, message["data"], message)


def reconnect_after_s(message: JSON) -> float | None:
    """A ``server_shutdown``'s ``reconnectAfterMs`` in seconds, or None if missing or bad."""
    value = message.get("reconnectAfterMs")
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return None
    return float(value) / 1000


def encode(message: JSON) -> str:
    """A client message as JSON text."""
    return orjson.dumps(message).decode()


def topic_requests(kind: str, topics: Iterable[str]) -> Iterator[str]:
    """``subscribe``/``unsubscribe`` frames for ``topics``, at most the server's
    ``MAX_TOPICS_PER_MESSAGE`` topics each; nothing for no topics."""
    names = list(topics)
    for start in range(0, len(names), MAX_TOPICS_PER_MESSAGE):
        yield encode({"type": kind, "topics": names[start : start + MAX_TOPICS_PER_MESSAGE]})
