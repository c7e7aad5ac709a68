"""Channels: what the broadcast loop queries and the hub fans out, one (topic, tenant) each.

A topic whose query names no tenant has one channel, ``Channel(topic, None)``, shared by all
its subscribers: exactly one query per tick, whoever listens. A tenant topic (its query holds
``{tenant}``, see :mod:`broadcaster.broadcast.topics`) has one channel per tenant with
subscribers, so each tenant's value is queried once per tick and reaches only that tenant's
connections. Both the hub and the loop key their state by channel; neither imports the other
for it.
"""

from __future__ import annotations

from typing import NamedTuple


class Channel(NamedTuple):
    """One stream of values: a topic, for one tenant or (``tenant`` None) for everyone.

    A tuple so that hashing it, once per subscriber lookup, costs what a tuple's does.
    """

    topic: str
    tenant: str | None
