"""Reconnection and heartbeat policies, and the pure arithmetic of their delays.

Nothing here sleeps or reads a clock: the connection loop asks for a delay and sleeps it, so
the schedule can be checked without any I/O. Randomness comes from a ``random.Random``
passed in by the caller, so a seeded one gives a reproducible schedule.

The schedule, with the defaults (base 5 s, cap 30 s, jitter ratio 0.5)::

    attempt k:   1      2       3       4       5
    delay:       5 s    10 s    20 s    30 s    30 s     min(cap, base * 2**(k-1))
    waited:      delay + uniform(0, jitter_ratio * delay)

After a ``server_shutdown`` the wait is the server's ``reconnectAfterMs`` plus
``uniform(0, jitter_ratio * max(reconnectAfterMs, 2 s))``: the jitter has a floor, because
the service accepts ``--reconnect-after-ms 0``, and jitter proportional to 0 would bring every
client back in the same instant (a reconnect storm on the restarted service).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

PLANNED_JITTER_FLOOR_S = 2.0
"""The smallest delay the jitter of a planned reconnection is a share of: with the default
ratio 0.5, clients told to come back at once still spread over 1 s."""


@dataclass(frozen=True, slots=True)
class ReconnectPolicy:
    """How the client waits between connection attempts.

    Attributes:
        base_delay_s: the delay before reconnection attempt 1.
        max_delay_s: the cap of the exponential delay (before jitter).
        jitter_ratio: each wait adds ``uniform(0, jitter_ratio * delay)``; 0 disables jitter.
        max_attempts: failed reconnection attempts in a row after which the server is
            declared down (state ``server_down``).
        probe_interval_s: while the server is down, the time between two half-open probes
            (one connection attempt each), plus jitter.
    """

    base_delay_s: float = 5.0
    max_delay_s: float = 30.0
    jitter_ratio: float = 0.5
    max_attempts: int = 5
    probe_interval_s: float = 60.0

    def __post_init__(self) -> None:
        if not self.base_delay_s > 0:
            raise ValueError(f"base_delay_s must be > 0, not {self.base_delay_s!r}")
        if not self.max_delay_s >= self.base_delay_s:
            raise ValueError(
                f"max_delay_s ({self.max_delay_s!r}) must be >= base_delay_s "
                f"({self.base_delay_s!r})"
            )
        if not self.jitter_ratio >= 0:
            raise ValueError(f"jitter_ratio must be >= 0, not {self.jitter_ratio!r}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, not {self.max_attempts!r}")
        if not self.probe_interval_s > 0:
            raise ValueError(f"probe_interval_s must be > 0, not {self.probe_interval_s!r}")


@dataclass(frozen=True, slots=True)
class HeartbeatPolicy:
    """The client's own application-level ``ping``, to find a dead link.

    Attributes:
        interval_s: time between two pings while connected (the first goes right after the
            welcome, so the round-trip time is known at once).
        pong_timeout_s: a ping with no ``pong`` after this long means the link is dead; the
            client drops it and reconnects.
    """

    interval_s: float = 30.0
    pong_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if not self.interval_s > 0:
            raise ValueError(f"interval_s must be > 0, not {self.interval_s!r}")
        if not self.pong_timeout_s > 0:
            raise ValueError(f"pong_timeout_s must be > 0, not {self.pong_timeout_s!r}")


def backoff_delay_s(policy: ReconnectPolicy, attempt: int) -> float:
    """The delay before reconnection attempt ``attempt`` (1-based), without jitter."""
    if attempt < 1:
        raise ValueError(f"attempt is 1-based, not {attempt!r}")
    # Capping the exponent first keeps 2**k small for very long outages.
    exponent = min(attempt - 1, 64)
    return min(policy.max_delay_s, policy.base_delay_s * 2.0**exponent)


def with_jitter(delay_s: float, jitter_ratio: float, rng: random.Random) -> float:
    """``delay_s`` plus ``uniform(0, jitter_ratio * delay_s)``: never earlier than asked."""
    return delay_s + rng.uniform(0.0, jitter_ratio * delay_s)


def reconnect_wait_s(policy: ReconnectPolicy, attempt: int, rng: random.Random) -> float:
    """What to sleep before reconnection attempt ``attempt``: backoff plus jitter."""
    return with_jitter(backoff_delay_s(policy, attempt), policy.jitter_ratio, rng)


def planned_wait_s(policy: ReconnectPolicy, reconnect_after_s: float, rng: random.Random) -> float:
    """What to sleep after a ``server_shutdown``: its ``reconnectAfterMs`` plus
    ``uniform(0, jitter_ratio * max(reconnectAfterMs, PLANNED_JITTER_FLOOR_S))``.

    The floor keeps a short or zero ``reconnectAfterMs`` from sending every client back at
    the same instant; with a ``reconnectAfterMs`` of at least the floor nothing changes.
    """
    after_s = max(0.0, reconnect_after_s)
    spread_s = policy.jitter_ratio * max(after_s, PLANNED_JITTER_FLOOR_S)
    return after_s + rng.uniform(0.0, spread_s)


def probe_wait_s(policy: ReconnectPolicy, rng: random.Random) -> float:
    """What to sleep before a half-open probe while the server is down."""
    return with_jitter(policy.probe_interval_s, policy.jitter_ratio, rng)
