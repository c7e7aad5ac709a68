"""The broker interface: what the broadcast loop needs from the cluster, owned by the loop.

Per channel and tick the loop asks for the **lease** (:meth:`Broker.claim`): the one node
that gets it takes the channel's next ``seq`` in the same atomic step, queries, encodes once
and **publishes** (:meth:`Broker.publish`) a :class:`Publication` that every node, itself
included, fans out to its own subscribers (:attr:`Broker.on_publication`). Publishing is
fenced on ``seq``: a late result never replaces a newer one as the channel's **last value**
(:meth:`Broker.last_value`), which a node that gets a new subscriber can offer at once.

The frames a publication carries are opaque text (a ``metrics_update``, a ``metrics_append``,
an ``error``): the broker stores and forwards them, never reads them.

A broker that cannot reach its backend raises :class:`BrokerUnavailable`; the loop then
serves its own subscribers alone (fallback) until the broker is back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

import trio

from broadcaster.channels import Channel
from broadcaster.errors import BroadcasterError

BrokerMode = Literal["cluster", "local"]


class BrokerUnavailable(BroadcasterError):
    """The broker's backend (Redis) cannot be reached or did not answer in time."""


@dataclass(frozen=True, slots=True)
class Claim:
    """The lease of one channel for one tick (or one refresh), won by this node: the ``seq``
    its value carries and the numbering's ``epoch``."""

    seq: int
    epoch: str


@dataclass(frozen=True, slots=True)
class Publication:
    """One channel's outcome at one ``seq``, as every node receives it.

    ``error``: an ``error`` frame to hand to the channel's subscribers first, or None.
    ``update``: the frame that becomes the channel's latest value (a ``metrics_update``), or
    None (a failure with no value to resend).
    """

    channel: Channel
    seq: int
    epoch: str
    error: str | None
    update: str | None
    # When the newest point of the update's data was taken, if it says (``asOf``).
    as_of_unix_s: float | None = None
    # A window topic's whole window after this publication (a ``metrics_update``), in a
    # cluster: kept with the last value, so a node that joins (or fell behind) takes the
    # window from the broker instead of querying it. Never sent to the other nodes.
    whole: str | None = None


@dataclass(frozen=True, slots=True)
class LastValue:
    """A channel's last publication with an update, as the broker keeps it, and its age."""

    publication: Publication
    age_s: float


PublicationHandler = Callable[[Publication], object]


class Broker(Protocol):
    """What the broadcast loop needs from the cluster (see the module docstring).

    ``on_publication`` is set by the loop before :meth:`run` starts; it runs synchronously for
    every publication received, the node's own included, and must not block.
    """

    cluster: str | None
    node_id: str
    epoch: str
    on_publication: PublicationHandler

    @property
    def mode(self) -> BrokerMode:
        """``cluster`` while the backend is reachable, else ``local``."""
        ...

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Receive publications (and keep the backend connection) until cancelled."""
        ...

    async def claim(self, channel: Channel, tick_id: int | None) -> Claim | None:
        """Try the lease of ``channel`` for tick ``tick_id`` (None: an immediate refresh, at
        most one per interval in the cluster); the next ``seq`` if this node won.

        Raises:
            BrokerUnavailable: the backend cannot be reached.
        """
        ...

    async def publish(self, publication: Publication) -> bool:
        """Store and send ``publication`` unless a newer ``seq`` was published; whether it was.

        Raises:
            BrokerUnavailable: the backend cannot be reached.
        """
        ...

    async def last_value(self, channel: Channel) -> LastValue | None:
        """The channel's last published update, if the broker still keeps it.

        Raises:
            BrokerUnavailable: the backend cannot be reached.
        """
        ...
