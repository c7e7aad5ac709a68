"""What a connection is built from: who the client is, and the limits and service-wide
counters it runs under.

The service builds one :class:`ConnectionPolicy` from its settings and hands it to the
WebSocket server, which builds every connection from it; the hub only registers them. Kept
apart from :mod:`broadcaster.ws.connection` so that the composition root and tests can name a
policy without the connection's machinery.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from broadcaster.auth.identity import TokenVerifier
from broadcaster.containment import Containment
from broadcaster.counters import Counters


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """Who is on the other end, as far as the handshake tells."""

    user_agent: str | None
    ip: str | None


@dataclass(frozen=True, slots=True)
class InputLimits:
    """What one client may send: bounds on the work its input can cause (see config.py)."""

    max_message_bytes: int
    max_message_fragments: int
    messages_per_s: float
    message_burst: int
    bytes_per_s: int
    frames_per_s: int


@dataclass(frozen=True, slots=True)
class OutputLimits:
    """When a connection's pending output makes it a slow consumer (closed with 4008)."""

    max_messages: int = 64
    max_bytes: int = 1 << 20
    stall_timeout_s: float = 15.0


class OriginCheck(Protocol):
    """Whether a handshake's ``Origin`` may connect (:class:`broadcaster.auth.OriginPolicy`)."""

    def allows(self, origin: bytes | None, host: bytes) -> bool:
        """Judge the raw header bytes (``origin`` None: no Origin header); never raises."""
        ...


@dataclass(frozen=True, slots=True)
class AuthPolicy:
    """How a connection proves who holds it (``--auth-mode jwt``): the verifier of its
    tokens, and how long it has to present one (see :mod:`broadcaster.ws.auth_gate`)."""

    verifier: TokenVerifier
    timeout_s: float


@dataclass(frozen=True, slots=True)
class ConnectionPolicy:
    """Everything a connection is built from, other than who it is: one object, made once by
    the service and handed to the WebSocket server, so no layer forwards the parts one by one.

    ``counters`` and ``containment`` are the service-wide ones (the hub's): a connection counts
    what it decides (errors, slow consumer, oversized message, updates) where it decides it.
    ``origins`` None accepts every Origin; ``auth`` None admits every client at once
    (``--auth-mode none``: no token, no extra task).
    """

    output: OutputLimits
    input: InputLimits
    counters: Counters = field(default_factory=Counters)
    containment: Containment = field(default_factory=Containment)
    origins: OriginCheck | None = None
    auth: AuthPolicy | None = None
