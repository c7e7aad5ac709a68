"""One window topic's channel in the broadcast loop: its window, where the window stands in
the channel's numbering, the frames made from it, and how another node's publication changes it.

The loop (:mod:`broadcaster.broadcast.loop`) runs the same pipeline for every channel (claim,
query, encode, record, publish); a window channel differs in four places, all here:

- what to read: :meth:`WindowChannel.read_range`, the whole window first, then the tail;
- what to send: :meth:`WindowChannel.encode` merges the answer and gives the whole window as
  a ``metrics_update`` the first time, then only what changed as a ``metrics_append``;
- what a new subscriber or a ``snapshot`` gets: :meth:`WindowChannel.whole_frame`, the whole
  window from memory, encoded at most once between two publishes however many ask;
- in a cluster, what another node published: :meth:`WindowChannel.absorb` merges its append
  (or takes its whole window), so that every node holds the same window, numbered alike.

An append only makes sense on top of the window it was made from, so the channel knows the
``(epoch, seq)`` its window holds (:attr:`WindowChannel.position`): an append is merged only
onto the window at the ``seq`` just before it, and a node that wins a tick's lease with a
window that is behind reads the whole window again (:meth:`WindowChannel.follows`).

Its refreshes take turns, as every channel's do (``ChannelState.refreshing``): a tick's refresh
and one asked for by a first subscriber could otherwise merge at the same time, and the rows
each sends would not follow the ``seq`` order in which clients merge them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
import structlog

from broadcaster import protocol
from broadcaster.broadcast.outcomes import (
    Failure,
    Update,
    Value,
    as_of_unix_s,
    internal_failure,
    log_fields,
)
from broadcaster.broadcast.window import Window, WindowSpec
from broadcaster.channels import Channel
from broadcaster.cluster.broker import Claim, Publication
from broadcaster.errors import SourceResponseError
from broadcaster.protocol import ErrorCode, FailureCause
from broadcaster.sources.base import StatementResult
from broadcaster.ws.frames import Frame

log = structlog.get_logger("broadcaster.broadcast.loop")


class WindowChannel:
    """The window of one window topic's channel (a topic for everyone, or one tenant's)."""

    def __init__(self, spec: WindowSpec) -> None:
        self.window = Window(spec)
        # The (epoch, seq) of the publication the window holds; None: unknown (none yet, or
        # an append that could not be merged: the window must be loaded or read whole).
        self.position: tuple[str, int] | None = None
        self.timestamp: str | None = None  # when the window's last good value was read
        self.data: Any = None  # the window's whole ``data`` as of ``timestamp``
        self._stale = False
        # The whole window's frame since the last publish, and the (epoch, seq) it carries.
        self._whole: tuple[tuple[str, int], Frame] | None = None

    def follows(self, epoch: str, seq: int) -> bool:
        """Whether the window holds the publication just before ``seq`` of ``epoch``: what
        an append numbered ``seq`` can be merged onto."""
        return self.position == (epoch, seq - 1)

    def reset(self) -> None:
        """Forget the window: the next read is the whole window."""
        self.window = Window(self.window.spec)
        self.position = None

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
        self.data, self.timestamp = data, timestamp
        if first:
            text = protocol.metrics_update(topic, seq, timestamp, data, stale=False, epoch=epoch)
            return text, data
        return protocol.metrics_append(topic, seq, timestamp, merged.data, epoch=epoch), data

    def published(self, *, stale: bool) -> None:
        """Something was published: the whole window's frame must be made again."""
        self._stale = stale
        self._whole = None

    def whole_frame(self, topic: str, seq: int, *, epoch: str) -> Frame | None:
        """The whole window as a ``metrics_update`` with the channel's current ``seq``,
        marked stale if the last refresh failed; None before its first good value."""
        if self.timestamp is None:
            return None
        if self._whole is None or self._whole[0] != (epoch, seq):
            text = protocol.metrics_update(
                topic, seq, self.timestamp, self.data, stale=self._stale, epoch=epoch
            )
            self._whole = ((epoch, seq), Frame(text, topic=topic))
        return self._whole[1]

    def absorb(self, publication: Publication) -> bool:
        """Bring the window to ``publication`` (another node's, or the broker's last value):
        merge its append onto the window it follows, or take its whole window. Whether its
        frames can go to this node's subscribers: False when it is an append the window does
        not follow (then :attr:`position` is None: the window must be loaded again).

        Raises:
            ValueError, KeyError, TypeError: the update is not a window message (then
                :attr:`position` is None too).
        """
        at = (publication.epoch, publication.seq)
        if self.position == at:
            return True  # this node's own publication: merged already
        follows = self.follows(*at)
        if publication.update is None:  # an error alone: the window did not change
            if follows:
                self.position = at
            return True
        self.position = None
        message = orjson.loads(publication.update)
        kind, data = message["type"], message["data"]
        if kind == "metrics_update":
            self.window.load(data)
        elif kind == "metrics_append" and follows:
            self.window.apply(data)
        else:
            return False
        self.position = at
        self.data, self.timestamp = self.window.whole(), str(message["timestamp"])
        self.published(stale=message.get("stale") is True)
        return True


def encode_window(
    channel: Channel, claim: Claim, window: WindowChannel, read: Value
) -> Update | Failure:
    """Merge a window topic's answer into its window: the whole window the first time
    (``metrics_update``), then only what changed (``metrics_append``); or why not."""
    name = channel.topic
    timestamp = protocol.iso_from_unix_ms(read.read_at_ms)
    assert timestamp is not None
    try:
        text, data = window.encode(
            name, claim.seq, timestamp, read.data, int(read.read_at_ms), epoch=claim.epoch
        )
    except TypeError as exc:  # orjson.JSONEncodeError
        log.exception("topic value could not be encoded", **log_fields(channel))
        return Failure(
            FailureCause.BAD_RESPONSE,
            f"the result for topic {name!r} cannot be encoded as JSON: {exc}",
        )
    except ValueError as exc:  # not a window's answer: nothing was merged
        log.exception("topic result could not be shaped", **log_fields(channel))
        return Failure(
            FailureCause.BAD_RESPONSE,
            str(SourceResponseError(f"unexpected result for window topic {name!r}: {exc}")),
        )
    except Exception as exc:
        return internal_failure(channel, exc)
    return Update(text, data)


def window_publication(
    channel: Channel,
    claim: Claim,
    window: WindowChannel,
    outcome: Update | Failure,
    *,
    shared: bool,
) -> Publication:
    """What a refresh of a window channel publishes at ``claim``: the append (or the first
    whole window); or the error and the whole window marked stale. ``shared``: published
    through the cluster, so the whole window goes with it for the broker to keep."""
    window.position = (claim.epoch, claim.seq)
    failed = isinstance(outcome, Failure)
    window.published(stale=failed)
    whole = window.whole_frame(channel.topic, claim.seq, epoch=claim.epoch)
    whole_text = None if whole is None else whole.text
    kept = whole_text if shared else None
    as_of = as_of_unix_s(window.data)
    if isinstance(outcome, Update):
        return Publication(channel, claim.seq, claim.epoch, None, outcome.text, as_of, kept)
    message, fields = protocol.query_failed_error(channel.topic, outcome.cause, outcome.text)
    error = protocol.error(ErrorCode.INFLUXDB_UNAVAILABLE, message, **fields)
    return Publication(channel, claim.seq, claim.epoch, error, whole_text, as_of, kept)
