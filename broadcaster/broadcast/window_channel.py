"""One window topic's channel in the broadcast loop: its window, the frames made from it, and
one refresh at a time.

The loop (:mod:`broadcaster.broadcast.loop`) runs the same pipeline for every channel (query,
encode, record, publish); a window channel differs in three places, all here:

- what to read: :meth:`WindowChannel.read_range`, the whole window first, then the tail;
- what to send: :meth:`WindowChannel.encode` merges the answer and gives the whole window as
  a ``metrics_update`` the first time, then only what changed as a ``metrics_append``;
- what a new subscriber or a ``snapshot`` gets: :meth:`WindowChannel.whole_frame`, the whole
  window from memory, encoded at most once between two publishes however many ask.

Its refreshes take turns (:attr:`WindowChannel.refreshing`): a tick's refresh and one asked
for by a first subscriber could otherwise merge at the same time, and the rows each sends
would not follow the ``seq`` order in which clients merge them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import trio

from broadcaster import protocol
from broadcaster.broadcast.window import Window, WindowSpec
from broadcaster.sources.base import StatementResult
from broadcaster.ws.frames import Frame


class WindowChannel:
    """The window of one window topic's channel (a topic for everyone, or one tenant's)."""

    def __init__(self, spec: WindowSpec) -> None:
        self.window = Window(spec)
        self.refreshing = trio.Lock()
        self._stale = False
        self._whole: Frame | None = None  # the whole window's frame since the last publish

    def read_range(self, now_ms: int) -> tuple[int, int]:
        """The time range the next query reads (see :meth:`Window.read_range`)."""
        return self.window.read_range(now_ms)

    def encode(
        self,
        topic: str,
        seq: int,
        timestamp: str,
        results: Sequence[StatementResult],
        now_ms: int,
        *,
        epoch: str,
    ) -> tuple[str, dict[str, Any]]:
        """Merge the answer read at ``now_ms``; the message to publish (the whole window the
        first time, else the append) and the whole window's ``data``.

        Raises:
            ValueError: the answer is not a window's (then nothing was merged).
            TypeError: the message cannot be encoded as JSON.
        """
        first = not self.window.built
        merged = self.window.merge(results, now_ms)
        data = self.window.whole()
        if first:
            text = protocol.metrics_update(topic, seq, timestamp, data, stale=False, epoch=epoch)
            return text, data
        return protocol.metrics_append(topic, seq, timestamp, merged.data, epoch=epoch), data

    def published(self, *, stale: bool) -> None:
        """Something was published: the whole window's frame must be made again."""
        self._stale = stale
        self._whole = None

    def whole_frame(self, topic: str, seq: int, timestamp: str, data: Any, *, epoch: str) -> Frame:
        """The whole window (``data``, as last read at ``timestamp``) as a ``metrics_update``
        with the channel's current ``seq``, marked stale if the last refresh failed."""
        if self._whole is None:
            text = protocol.metrics_update(
                topic, seq, timestamp, data, stale=self._stale, epoch=epoch
            )
            self._whole = Frame(text, topic=topic)
        return self._whole
