"""The open-file limit: each WebSocket connection holds one socket, hence one file descriptor.

The soft limit (often 1024) is raised as far as the hard limit allows, once, at startup.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass

# Descriptors the service needs besides client sockets: listeners, InfluxDB and HTTP
# connections, log files, the interpreter's own.
RESERVED_FDS = 64
# A hard limit of "unlimited" cannot be the soft limit; the kernel caps it (fs.nr_open).
_UNLIMITED_FALLBACK = 1 << 20


@dataclass(frozen=True)
class FdLimit:
    """The soft limit before and after raising it, and the hard limit."""

    before: int
    soft: int
    hard: int

    @property
    def connection_capacity(self) -> int:
        """How many client connections the limit leaves room for."""
        return max(0, self.soft - RESERVED_FDS)


def raise_fd_limit() -> FdLimit:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit (or as near as the kernel allows)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _UNLIMITED_FALLBACK if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        for candidate in (target, _UNLIMITED_FALLBACK, 65536):
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (min(candidate, target), hard))
                break
            except (ValueError, OSError):
                continue
    after, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    unlimited = _UNLIMITED_FALLBACK
    return FdLimit(
        before=unlimited if soft == resource.RLIM_INFINITY else soft,
        soft=unlimited if after == resource.RLIM_INFINITY else after,
        hard=unlimited if hard == resource.RLIM_INFINITY else hard,
    )
