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
    soft_setting, hard_setting = resource.getrlimit(resource.RLIMIT_NOFILE)
    soft, hard = _finite(soft_setting), _finite(hard_setting)
    for target in (hard, min(hard, 65536)):
        if soft >= target:
            break
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard_setting))
            break
        except (ValueError, OSError):  # over fs.nr_open: try a smaller one
            continue
    after = _finite(resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    return FdLimit(before=soft, soft=after, hard=hard)


def _finite(limit: int) -> int:
    return _UNLIMITED_FALLBACK if limit == resource.RLIM_INFINITY else limit
