"""The case table: every kind of fuzz case, its port and its share, and ``generate_case``.

Case ``index`` of ``seed`` is drawn from ``random.Random(f"{seed}:{index}")`` (string seeds
hash with SHA-512, so this is the same on every run and machine, whatever PYTHONHASHSEED),
so any single case can be rebuilt from its two numbers without generating the others.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from tests.fuzz import frame_cases, handshake_cases, http_cases
from tests.fuzz.plan import Case, Plan, Port


@dataclass(frozen=True, slots=True)
class Kind:
    """One kind of case: its name, the port it targets, its weight (per mille), its generator."""

    name: str
    port: Port
    weight: int
    generate: Callable[[random.Random], Plan]


KINDS = (
    # The WebSocket port's handshake: 39 %.
    Kind("ws.handshake.mutated", "ws", 100, handshake_cases.mutated),
    Kind("ws.handshake.header_bytes", "ws", 80, handshake_cases.header_bytes),
    Kind("ws.handshake.header_set", "ws", 40, handshake_cases.header_set),
    Kind("ws.handshake.host", "ws", 50, handshake_cases.host),
    Kind("ws.handshake.request_line", "ws", 40, handshake_cases.request_line),
    Kind("ws.handshake.key_version", "ws", 25, handshake_cases.key_and_version),
    Kind("ws.handshake.oversized", "ws", 15, handshake_cases.oversized),
    Kind("ws.handshake.random", "ws", 20, handshake_cases.random_bytes),
    Kind("ws.handshake.truncated", "ws", 20, handshake_cases.truncated),
    # Frames after a valid handshake: 49 %.
    Kind("ws.frames.hostile_json", "ws", 140, frame_cases.hostile_json_messages),
    Kind("ws.frames.subscribe", "ws", 60, frame_cases.subscriptions),
    Kind("ws.frames.truncated", "ws", 35, frame_cases.truncated_frame),
    Kind("ws.frames.random", "ws", 30, frame_cases.random_after_handshake),
    Kind("ws.frames.reserved", "ws", 35, frame_cases.reserved_bits),
    Kind("ws.frames.unmasked", "ws", 20, frame_cases.unmasked),
    Kind("ws.frames.oversized_length", "ws", 35, frame_cases.oversized_length),
    Kind("ws.frames.fragmented", "ws", 55, frame_cases.fragmented),
    Kind("ws.frames.continuation", "ws", 20, frame_cases.stray_continuation),
    Kind("ws.frames.close", "ws", 35, frame_cases.close_frames),
    Kind("ws.frames.ping_flood", "ws", 25, frame_cases.ping_flood),
    # The HTTP port: 12 %.
    Kind("http.mutated", "http", 30, http_cases.mutated),
    Kind("http.host", "http", 20, http_cases.host),
    Kind("http.target", "http", 20, http_cases.target),
    Kind("http.oversized", "http", 8, http_cases.oversized),
    Kind("http.body", "http", 20, http_cases.bodies),
    Kind("http.framing", "http", 12, http_cases.framing),
    Kind("http.random", "http", 10, http_cases.random_bytes),
)
KINDS_BY_NAME = {kind.name: kind for kind in KINDS}
_WEIGHTS = [kind.weight for kind in KINDS]


def generate_case(seed: int, index: int) -> Case:
    """Case ``index`` of the run with ``seed``: a pure function of the two numbers."""
    rng = random.Random(f"{seed}:{index}")
    kind = rng.choices(KINDS, weights=_WEIGHTS, k=1)[0]
    return Case(seed=seed, index=index, kind=kind.name, port=kind.port, plan=kind.generate(rng))


def generate_cases(seed: int, count: int, start: int = 0) -> Iterator[Case]:
    """Cases ``start`` to ``start + count - 1`` of ``seed``, lazily."""
    for index in range(start, start + count):
        yield generate_case(seed, index)
