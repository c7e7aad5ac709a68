"""Which tick it is, as every node of a cluster agrees: the lease of a channel is per tick id.

Ticks fall at ``k * interval + offset`` on the wall clock (since the Unix epoch), so a tick's
id is ``k``. Computed at a tick, it is rounded to the nearest ``k``: a node whose timer fires a
little late (or whose clock is a little off) still names the tick it meant, as long as it is
off by less than half an interval. This is the one place the tick id is computed.
"""

from __future__ import annotations


def tick_id_at(unix_ms: float, interval_ms: float, offset_ms: float = 0) -> int:
    """The id of the tick nearest to the wall-clock instant ``unix_ms``."""
    return round((unix_ms - offset_ms) / interval_ms)
