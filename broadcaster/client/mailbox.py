"""Updates waiting for the caller: the latest value per topic (latest wins).

The connection's receive loop must never wait for the caller. If it did, the server's
outbox for this connection would fill up and the server would close it as a slow consumer
(4008), and pongs would queue behind updates and look like a dead link. Every update is a
full value that replaces the previous one of its topic (docs/protocol.md), so when the
caller is slow, an update still waiting is simply replaced by the newer one of the same
topic and counted in ``dropped``. Memory is bounded by the number of topics, and by
``max_topics`` against a server that invents names.
"""

from __future__ import annotations

from collections.abc import Iterable

import trio

from broadcaster.client.messages import MetricsUpdate


class LatestPerTopic:
    """A mailbox holding at most one pending update per topic, in arrival order of topics."""

    def __init__(self, max_topics: int = 1024) -> None:
        if max_topics < 1:
            raise ValueError(f"max_topics must be >= 1, not {max_topics!r}")
        self._pending: dict[str, MetricsUpdate] = {}
        self._max_topics = max_topics
        self._lot = trio.lowlevel.ParkingLot()
        self._closed = False
        self._error: Exception | None = None
        self.dropped = 0
        """Updates replaced (or evicted) before the caller took them."""

    def __len__(self) -> int:
        return len(self._pending)

    def put(self, update: MetricsUpdate) -> None:
        """Queue ``update``, replacing a pending one of the same topic. Never blocks."""
        if update.topic in self._pending:
            self.dropped += 1
        elif len(self._pending) >= self._max_topics:
            del self._pending[next(iter(self._pending))]
            self.dropped += 1
        # Replacing keeps the topic's place in line, so a busy topic cannot starve others.
        self._pending[update.topic] = update
        self._lot.unpark()

    def discard(self, topics: Iterable[str]) -> None:
        """Forget pending updates of ``topics`` (after an unsubscribe)."""
        for topic in topics:
            self._pending.pop(topic, None)

    def close(self, error: Exception | None = None) -> None:
        """No more updates: ``get`` raises ``error``, or ``trio.EndOfChannel`` without one,
        once the mailbox is empty. The first close decides."""
        if not self._closed:
            self._closed, self._error = True, error
        self._lot.unpark_all()

    async def get(self) -> MetricsUpdate:
        """The oldest pending update.

        Raises:
            trio.EndOfChannel: the mailbox is closed and empty.
            Exception: the ``error`` the mailbox was closed with, once it is empty.
        """
        await trio.lowlevel.checkpoint()
        while not self._pending:
            if self._closed:
                raise self._error if self._error is not None else trio.EndOfChannel
            await self._lot.park()
        update = self._pending.pop(next(iter(self._pending)))
        if self._pending:
            # Another task may be waiting too; a put woke only one of them.
            self._lot.unpark()
        return update
