"""What the broadcast loop remembers: per topic its counts, per channel its numbering and
its latest value (what a new subscriber is offered at once)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import trio

from broadcaster.broadcast.topics import Topic
from broadcaster.broadcast.window_channel import WindowChannel
from broadcaster.channels import Channel
from broadcaster.ws.frames import Frame


@dataclass
class TopicState:
    """What the loop counts of one topic, over all its channels.

    ``seq``: the highest ``seq`` any channel of the topic has delivered.
    """

    seq: int = 0
    queries: int = 0
    failures: int = 0


@dataclass
class ChannelState:
    """What the loop remembers of one channel: its numbering and its latest value."""

    seq: int = 0
    epoch: str | None = None
    # One refresh at a time: a seq is taken before the query, so two at once could deliver
    # n+1 before n, and the fence would drop n (a gap with nothing lost).
    refreshing: trio.Lock = field(default_factory=trio.Lock)
    # The last metrics_update delivered (this node's or another's): a stale resend's source.
    last_update: str | None = None
    # When the newest point of the last good value was taken, if its data says (``asOf``).
    as_of_unix_s: float | None = None
    # The last frame delivered and when (trio.current_time()): what a new subscriber gets.
    latest: tuple[Frame, float] | None = None
    # A window topic's window: what a new subscriber and a snapshot get.
    window: WindowChannel | None = None


class ChannelStates(dict[Channel, ChannelState]):
    """The state of every channel the loop knows, made on first use (with a window for a
    window topic's channel)."""

    def __init__(self, topics: Mapping[str, Topic]) -> None:
        super().__init__()
        self._topics = topics

    def of(self, channel: Channel) -> ChannelState:
        """The channel's state, made empty if it has none yet."""
        state = self.get(channel)
        if state is None:
            spec = self._topics[channel.topic].window
            window = None if spec is None else WindowChannel(spec)
            state = self[channel] = ChannelState(window=window)
        return state
