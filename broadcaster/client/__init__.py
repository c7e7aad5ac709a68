"""A Python client of the broadcaster WebSocket service (docs/python-client.md).

::

    from broadcaster.client import open_client

    async with open_client("ws://127.0.0.1:8765/ws", topics=["overview"]) as client:
        async for update in client:
            print(update.topic, update.seq, update.stale, update.data)

Modules: ``client`` (the API), ``loop`` (connect, serve, reconnect), ``link`` (one
connection and its clean close), ``backoff`` (policies and delay arithmetic), ``status``
(states and watching them), ``mailbox`` (latest update per topic), ``messages`` (wire
format), ``watch`` (the ``broadcaster watch`` terminal tail).
"""

from broadcaster.client.backoff import HeartbeatPolicy, ReconnectPolicy
from broadcaster.client.client import BroadcasterClient, open_client
from broadcaster.client.link import Connector
from broadcaster.client.messages import MetricsUpdate
from broadcaster.client.status import (
    ClientStatus,
    ConnectionQuality,
    ConnectionState,
    quality_for_rtt,
)

__all__ = [
    "BroadcasterClient",
    "ClientStatus",
    "ConnectionQuality",
    "ConnectionState",
    "Connector",
    "HeartbeatPolicy",
    "MetricsUpdate",
    "ReconnectPolicy",
    "open_client",
    "quality_for_rtt",
]
