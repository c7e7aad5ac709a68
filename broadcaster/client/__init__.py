"""A Python client of the broadcaster WebSocket service (docs/python-client.md).

::

    from broadcaster.client import open_client

    async with open_client("ws://127.0.0.1:8765/ws", topics=["overview"]) as client:
        async for update in client:
            print(update.topic, update.seq, update.stale, update.data)

Modules: ``client`` (the API), ``loop`` (connect, serve, reconnect), ``link`` (one
connection and its clean close), ``auth`` (tokens and when to refresh them), ``refresh``
(one connection's token and its in-band refresh), ``backoff``
(policies and delay arithmetic), ``status`` (states and watching them), ``mailbox`` (latest
update per topic), ``messages`` (wire format), ``window`` (window topics: merging appends,
snapshots after a gap), ``watch`` (the ``broadcaster watch`` terminal
tail).

The client logs through the standard ``logging`` module, to loggers under
``broadcaster.client``, and prints nothing unless the application configures logging.
"""

import logging

from broadcaster.client.auth import TokenProvider
from broadcaster.client.backoff import HeartbeatPolicy, ReconnectPolicy
from broadcaster.client.client import BroadcasterClient, open_client
from broadcaster.client.link import Connector
from broadcaster.client.messages import MetricsUpdate
from broadcaster.client.status import (
    ClientStatus,
    ClientStopped,
    ConnectionQuality,
    ConnectionState,
    quality_for_rtt,
)

# A library prints nothing unless the application configures logging: without a handler
# here, the standard library's "last resort" handler would print warnings to stderr.
logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "BroadcasterClient",
    "ClientStatus",
    "ClientStopped",
    "ConnectionQuality",
    "ConnectionState",
    "Connector",
    "HeartbeatPolicy",
    "MetricsUpdate",
    "ReconnectPolicy",
    "TokenProvider",
    "open_client",
    "quality_for_rtt",
]
