"""Garbage collection between broadcasts, not in the middle of one.

CPython's cyclic collector runs when allocations cross a threshold, wherever the program is.
With thousands of connections alive, a full (generation 2) collection takes tens of
milliseconds per thousand connections, and one that starts during a fan-out delays every
client after it. So while the service runs, the collector is paced: generation 0 still runs
automatically (it only looks at the newest objects, and is cheap), generations 1 and 2 run
right after a tick has published, when the loop has a whole interval ahead of it: the young
ones after every tick, a full collection at most every ``full_every_s``.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from types import TracebackType

import trio

# Generation 1 and 2 never trigger by themselves (they are collected after ticks).
_NEVER = 1 << 30
# Pacers active in this process (tests run several services), and the thresholds to restore
# when the last one exits.
_active = 0
_saved_thresholds: tuple[int, int, int] | None = None


class GcPacer:
    """A context manager that paces the collector; call :meth:`after_tick` after each tick."""

    def __init__(
        self, *, full_every_s: float = 60.0, collect: Callable[[int], int] = gc.collect
    ) -> None:
        self.full_every_s = full_every_s
        self._collect = collect
        self._next_full = 0.0

    def __enter__(self) -> GcPacer:
        global _active, _saved_thresholds
        if _active == 0:
            _saved_thresholds = gc.get_threshold()
            gc.set_threshold(_saved_thresholds[0], _NEVER, _NEVER)
        _active += 1
        self._next_full = trio.current_time() + self.full_every_s
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        global _active
        _active -= 1
        if _active == 0 and _saved_thresholds is not None:
            gc.set_threshold(*_saved_thresholds)

    def after_tick(self) -> None:
        """Collect the young generations, or everything when a full collection is due."""
        now = trio.current_time()
        if now >= self._next_full:
            self._next_full = now + self.full_every_s
            self._collect(2)
        else:
            self._collect(1)
