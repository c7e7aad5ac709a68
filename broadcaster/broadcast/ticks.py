"""Aligned ticks: which tick it is, and when a tick happens, as pure arithmetic on the wall clock.

Tick ``k`` happens at the wall-clock instant ``k * interval + offset`` milliseconds since the
Unix epoch. Every process that shares an interval and an offset agrees on the number of the
tick at any instant, whenever it started, so the number names one tick across a cluster;
and ticks follow the data's own rhythm (points written at multiples of the interval are read
``offset`` after)::

    wall clock (ms)   0      offset       interval+offset    2*interval+offset
                      |--------|-----------------|------------------|---- ...
    tick number          -1   ^ 0                ^ 1                ^ 2
                              tick 0 happens     tick 1             tick 2

Between two instants, :func:`tick_number` is the tick that last happened;
:func:`next_tick` is the one to wait for after tick ``last`` has run.
"""

from __future__ import annotations

import math


def tick_number(unix_ms: float, interval_ms: int, offset_ms: int) -> int:
    """The number of the last tick at or before ``unix_ms``: ``floor((t - offset) / interval)``."""
    return math.floor((unix_ms - offset_ms) / interval_ms)


def tick_instant(k: int, interval_ms: int, offset_ms: int) -> int:
    """When tick ``k`` happens, in milliseconds since the Unix epoch."""
    return k * interval_ms + offset_ms


def next_tick(last: int | None, unix_ms: float, interval_ms: int, offset_ms: int) -> int:
    """The tick to wait for at ``unix_ms``, after tick ``last`` ran (None: no tick yet).

    Normally the first aligned instant after now, never one already past: a slow tick or a
    wall clock that jumped ahead skips ticks instead of bunching them (the caller counts
    ``result - last - 1`` as skipped). If the wall clock reads a little before ``last``'s
    instant (it stepped back by less than an interval, or was read a hair early), ``last + 1``
    follows so that no number runs twice; if it stepped back by more, the wall clock wins
    and numbers restart from its next tick.
    """
    following = tick_number(unix_ms, interval_ms, offset_ms) + 1
    if last is not None and following == last:
        return last + 1
    return following
