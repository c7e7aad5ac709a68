"""A client message put together from its frames, within the input limits.

A WebSocket message may come in many frames; its size is measured in bytes (UTF-8, not
characters) and in frames as they arrive, so an oversized message is refused before it is
ever joined (the connection then closes with 1009).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from wsproto.events import BytesMessage, Message, TextMessage


@dataclass(frozen=True, slots=True)
class Oversized:
    """The message went over a limit; ``reason`` is the close reason."""

    reason: str


class MessageAssembly:
    """The frames of the client message being received: its parts, bytes and frame count."""

    __slots__ = ("_max_bytes", "_max_fragments", "fragments", "parts", "size")

    def __init__(self, max_bytes: int, max_fragments: int) -> None:
        self._max_bytes = max_bytes
        self._max_fragments = max_fragments
        self.parts: list[str | bytes] = []
        self.size = 0
        self.fragments = 0

    def add(self, event: Message[Any]) -> str | bytes | Oversized | None:
        """Add one frame (or part of one): the whole message once complete, else None."""
        data = event.data
        self.size += len(data) if isinstance(data, bytes) or data.isascii() else len(data.encode())
        self.fragments += event.frame_finished
        if self.size > self._max_bytes:
            return Oversized(f"Exceeded maximum message size: {self._max_bytes} bytes")
        if self.fragments > self._max_fragments:
            return Oversized(f"message split into more than {self._max_fragments} frames")
        self.parts.append(data)
        if not event.message_finished:
            return None
        joined = _joined(self.parts, event)
        self.parts = []
        self.size = self.fragments = 0
        return joined


def _joined(parts: list[str | bytes], last: Message[Any]) -> str | bytes:
    if isinstance(last, TextMessage):
        return "".join(part for part in parts if isinstance(part, str))
    assert isinstance(last, BytesMessage)
    return b"".join(part for part in parts if isinstance(part, bytes))
