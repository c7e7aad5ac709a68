"""The one rule for a ``Host`` header, shared by the WebSocket handshake and the HTTP app.

``uri-host [":" port]`` (RFC 9110 7.2, RFC 3986 3.2.2), checked on the bytes by syntax alone:
a bracketed IPv6 literal, or a name (which covers IPv4) of at most 253 characters in labels of
at most 63 (RFC 1035 2.3.4), and a port up to 65535. The value is never decoded with the IDNA
codec, which raises on input such as ``xn--zz`` or a 64-character label: a non-ASCII byte
simply does not match, and a label that is too long is refused before any library sees it.
"""

from __future__ import annotations

import ipaddress
import re

MAX_NAME_CHARS = 253
MAX_LABEL_CHARS = 63

_HOST = re.compile(
    rb"(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<name>(?:[A-Za-z0-9._~!$&'()*+,;=-]|%[0-9A-Fa-f]{2})+))"
    rb"(?::(?P<port>[0-9]{0,5}))?"
)


def is_valid_host(value: bytes) -> bool:
    """Whether ``value`` is a well-formed ``host[:port]`` (an empty port is allowed)."""
    match = _HOST.fullmatch(value)
    if match is None:
        return False
    port = match["port"]
    if port and int(port) > 65535:
        return False
    name = match["name"]
    if name is not None:
        return len(name) <= MAX_NAME_CHARS and all(
            len(label) <= MAX_LABEL_CHARS for label in name.split(b".")
        )
    try:
        ipaddress.IPv6Address(match["ipv6"].decode("ascii"))
    except ValueError:
        return False
    return True
