"""Which browser pages may open a WebSocket: the ``Origin`` check (``--allowed-origins``).

Without it any web page could open a connection with the visitor's network position
(cross-site WebSocket hijacking). The rules, decided on the raw header bytes:

- no ``Origin``: allowed (not a browser; browsers always send it on a WebSocket handshake);
- ``*`` configured: allowed;
- a list configured: allowed when the Origin equals one of them, comparing the scheme and
  host without regard to case and a default port (80 for http/ws, 443 for https/wss) as no
  port; ``Origin: null`` (sandboxed frames, files) is never equal to a listed origin;
- nothing configured: allowed when the Origin's host name equals the ``Host`` header's host
  name (ports may differ: the dashboard is served from the HTTP port of the same host).

Nothing here decodes with a codec that can fail, and no input makes it raise.
"""

from __future__ import annotations

import re

from broadcaster.host_header import is_valid_host

ANY_ORIGIN = "*"
DEFAULT_PORTS = {b"http": b"80", b"ws": b"80", b"https": b"443", b"wss": b"443"}
MAX_LOGGED_ORIGIN_CHARS = 200

_ORIGIN = re.compile(rb"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<authority>[^/?#]+)")

# (scheme, host, port or None), lowercased, a default port dropped.
_Origin = tuple[bytes, bytes, bytes | None]


def split_host(value: bytes) -> tuple[bytes, bytes | None] | None:
    """``host[:port]`` -> (host lowercased, port or None when absent or empty); None when
    ``value`` is not a valid Host (see :mod:`broadcaster.host_header`)."""
    if not is_valid_host(value):
        return None
    if value.startswith(b"["):
        end = value.index(b"]") + 1
        host, port = value[:end], value[end + 1 :]
    else:
        host, _, port = value.partition(b":")
    return host.lower(), port or None


def parse_origin(value: bytes) -> _Origin | None:
    """A serialised origin (``scheme://host[:port]``) normalised, or None if it is not one."""
    match = _ORIGIN.fullmatch(value)
    if match is None:
        return None
    parts = split_host(match["authority"])
    if parts is None:
        return None
    scheme = match["scheme"].lower()
    host, port = parts
    if port is not None:
        port = port.lstrip(b"0") or b"0"
        if port == DEFAULT_PORTS.get(scheme):
            port = None
    return scheme, host, port


def printable_origin(origin: bytes) -> str:
    """``origin`` for a log line: never fails, escapes what is not printable ASCII, and is
    cut at :data:`MAX_LOGGED_ORIGIN_CHARS`."""
    text = origin[:MAX_LOGGED_ORIGIN_CHARS].decode("ascii", "backslashreplace")
    text = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)
    return text + ("..." if len(origin) > MAX_LOGGED_ORIGIN_CHARS else "")


class OriginPolicy:
    """The Origin rule of ``--allowed-origins`` (``()``: same host as the Host header).

    Raises:
        ValueError: an entry is neither ``*`` nor a ``scheme://host[:port]`` origin (the
            settings validate this first, so it signals a programming error).
    """

    def __init__(self, allowed_origins: tuple[str, ...]) -> None:
        self._any = ANY_ORIGIN in allowed_origins
        self._listed: frozenset[_Origin] = frozenset()
        self._same_host_rule = not allowed_origins
        listed = set()
        for entry in allowed_origins:
            if entry == ANY_ORIGIN:
                continue
            parsed = parse_origin(entry.encode("utf-8", "surrogatepass"))
            if parsed is None:
                raise ValueError(f"not an origin: {entry!r}")
            listed.add(parsed)
        self._listed = frozenset(listed)

    def allows(self, origin: bytes | None, host: bytes | None) -> bool:
        """Whether a handshake with these ``Origin`` and ``Host`` header values may proceed."""
        if origin is None or self._any:
            return True
        parsed = parse_origin(origin)
        if parsed is None:  # "null", a list of origins, garbage
            return False
        if not self._same_host_rule:
            return parsed in self._listed
        host_parts = None if host is None else split_host(host)
        return host_parts is not None and host_parts[0] == parsed[1]
