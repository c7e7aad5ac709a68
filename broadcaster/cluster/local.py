"""The in-process broker: standalone mode, one process, through the cluster's interface.

Every claim is won, ``seq`` is counted in memory (a tenant's channel starts from the highest
``seq`` its topic reached, so it never goes back), the epoch is new at each start, and a
publication is handed to :attr:`LocalBroker.on_publication` synchronously: a tick has fanned
out when ``publish`` returns, exactly as before there was a broker. The broadcast loop also
uses one as its fallback numbering while Redis is unreachable.
"""

from __future__ import annotations

import os
import secrets
import socket

import trio

from broadcaster.channels import Channel
from broadcaster.cluster.broker import (
    BrokerMode,
    Claim,
    LastValue,
    Publication,
    PublicationHandler,
)


def default_node_id() -> str:
    """``--node-id``'s default: hostname, pid and a random suffix (unique after a restart)."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def new_epoch() -> str:
    """A fresh numbering's name: random, short, URL-safe."""
    return secrets.token_urlsafe(9)


class LocalBroker:
    """Wins every claim; keeps no last value (the loop keeps its own latest frames)."""

    cluster: str | None = None

    def __init__(self, node_id: str, epoch: str | None = None) -> None:
        self.node_id = node_id
        self.epoch = epoch if epoch is not None else new_epoch()
        self.on_publication: PublicationHandler = _ignore
        self._seq: dict[Channel, int] = {}
        self._topic_seq: dict[str, int] = {}

    @property
    def mode(self) -> BrokerMode:
        """Always ``local``."""
        return "local"

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Nothing to receive from elsewhere: report started and wait to be cancelled."""
        task_status.started()
        await trio.sleep_forever()

    def next_seq(self, channel: Channel, at_least: int = 0) -> int:
        """Take the channel's next ``seq`` (above ``at_least``, the last one this node sent
        in another numbering, so that a fallback never goes back)."""
        start = max(self._seq.get(channel, self._topic_seq.get(channel.topic, 0)), at_least)
        seq = self._seq[channel] = start + 1
        self._topic_seq[channel.topic] = max(seq, self._topic_seq.get(channel.topic, 0))
        return seq

    def forget(self, channel: Channel) -> None:
        """Drop a tenant channel's counter (its topic's highest ``seq`` is kept)."""
        self._seq.pop(channel, None)

    async def claim(self, channel: Channel, tick_id: int | None) -> Claim | None:
        """Always won: the channel's next ``seq``."""
        return Claim(self.next_seq(channel), self.epoch)

    async def publish(self, publication: Publication) -> bool:
        """Hand ``publication`` to this process's subscribers, now."""
        self.on_publication(publication)
        return True

    async def last_value(self, channel: Channel) -> LastValue | None:
        """None: in one process, the loop's own latest frame is the last value."""
        return None


def _ignore(publication: Publication) -> None:
    """The handler until the loop sets its own."""
