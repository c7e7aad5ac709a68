"""What one fuzz case does on its TCP connection: the steps, and how it ends.

A case is data, not code: the runner (``tests/fuzz/runner.py``) interprets it, and the case
log and failure messages print it. Generators only build these values.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass
from typing import Literal

Port = Literal["ws", "http"]


@dataclass(frozen=True, slots=True)
class Send:
    """Write ``data``, after a pause of ``pause_s`` (a few ms, so the server reads in parts)."""

    data: bytes
    pause_s: float = 0.0


@dataclass(frozen=True, slots=True)
class AwaitUpgrade:
    """Read the answer's head; the case sends nothing more unless it is ``101``."""


Step = Send | AwaitUpgrade


class Ending(enum.StrEnum):
    """How the client leaves once everything is sent."""

    HALF_CLOSE = "half_close"  # shut down our side, read until the server closes
    RESET = "reset"  # close with SO_LINGER 0: an RST, at once
    LINGER = "linger"  # keep reading a short while, then close normally


@dataclass(frozen=True, slots=True)
class Plan:
    """A generator's result: the steps and the ending of one connection."""

    steps: tuple[Step, ...]
    ending: Ending


@dataclass(frozen=True, slots=True)
class Case:
    """One fuzz case, reproducible from ``(seed, index)`` alone."""

    seed: int
    index: int
    kind: str
    port: Port
    plan: Plan

    @property
    def sent_bytes(self) -> bytes:
        """Everything the case sends, concatenated."""
        return b"".join(step.data for step in self.plan.steps if isinstance(step, Send))

    def describe(self, limit: int = 300) -> str:
        """One line for logs and failure messages: identity, size, and the first bytes."""
        data = self.sent_bytes
        head = data[:limit]
        more = f" ... (+{len(data) - limit} bytes)" if len(data) > limit else ""
        return (
            f"case #{self.index} seed={self.seed} kind={self.kind} port={self.port} "
            f"ending={self.plan.ending.value} bytes={len(data)}: {head!r}{more}"
        )


def chunked(rng: random.Random, data: bytes) -> tuple[Send, ...]:
    """``data`` as one ``Send`` (70 %), or cut in 2-8 pieces, sometimes with 1-5 ms pauses."""
    if rng.random() >= 0.3 or len(data) < 2:
        return (Send(data),)
    cuts = sorted({rng.randrange(1, len(data)) for _ in range(rng.randint(1, 7))})
    pause_s = rng.choice((0.0, 0.0, 0.001, 0.005))
    pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    return tuple(Send(piece, pause_s if number else 0.0) for number, piece in enumerate(pieces))
