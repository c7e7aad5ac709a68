"""The WebSocket opening handshake (RFC 6455 4.2): read the request, judge it, answer it.

wsproto's own handshake decoded header values on the way (the IDNA codec for ``Host``, ASCII
for comma lists) and let the decoding errors escape, which ended the whole process; it also
upgraded HTTP/1.0 requests and keys that are not 16 bytes. Here the three steps are apart:

- :class:`RequestReader` (sans I/O) feeds the bytes to h11 under a cap on the head's size;
- :func:`validate` (pure) judges the parsed request: it compares bytes and never decodes, so
  no header value can raise;
- :func:`check_origin` (pure) asks the origin policy about the raw ``Origin`` and ``Host``
  bytes: a browser page from a foreign origin is refused with 403 before the upgrade
  (cross-site WebSocket hijacking);
- :func:`receive_request` and :func:`send_rejection` do the socket side. A rejection is
  followed by a lingering close, so the kernel does not answer unread client bytes with a
  reset that would destroy the answer before the client reads it.

::

    bytes --RequestReader--> h11.Request --validate--> Accept --accept_response--> 101 + frames
              |                          |      '--> Reject --send_rejection--> 4xx, EOF, drain
              |                          '--check_origin--> Reject(403)
              '--> Reject: not HTTP (400), head over MAX_HEAD_BYTES (431)

No extension and no subprotocol are ever negotiated: one encoded frame serves every client.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from http import HTTPStatus

import h11
import trio

from broadcaster.host_header import is_valid_host
from broadcaster.ws.connection import RECEIVE_BYTES
from broadcaster.ws.policy import OriginCheck

MAX_HEAD_BYTES = 16384  # request line and headers; browsers send about 1 KiB
LINGER_TIMEOUT_S = 2.0  # after a rejection: how long the client's leftovers are read
LINGER_MAX_BYTES = 65536  # ... and how many bytes of them at most
WEBSOCKET_VERSION = b"13"
_ACCEPT_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

_KEY = re.compile(rb"[A-Za-z0-9+/]{22}==")  # base64 with exactly 16 bytes behind it
_PRINTABLE_ASCII = re.compile(rb"[\x20-\x7e\t]*")
_HTTP_VERSION = re.compile(rb"(?P<major>[0-9])\.(?P<minor>[0-9])")
# Headers that hold comma-separated tokens: non-ASCII there is refused, never decoded.
_TOKEN_LIST_HEADERS = (
    b"connection",
    b"upgrade",
    b"sec-websocket-version",
    b"sec-websocket-extensions",
    b"sec-websocket-protocol",
)
_REASON_CHARS = 120


@dataclass(frozen=True, slots=True)
class Accept:
    """The request is a valid upgrade: answer 101 with ``accept_token``.

    The raw values of the headers judged later ride along, outside equality: ``host``,
    ``origins`` (:func:`check_origin`) and ``authorization`` (the connection's token, never
    shown in a repr or a log line).
    """

    accept_token: bytes
    user_agent: bytes | None
    host: bytes = field(default=b"", compare=False)
    origins: tuple[bytes, ...] = field(default=(), compare=False)
    authorization: tuple[bytes, ...] = field(default=(), compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Reject:
    """Answer ``status`` with ``reason`` as a plain-text body, then close."""

    status: int
    reason: str
    headers: tuple[tuple[bytes, bytes], ...] = ()
    connection: bytes = b"close"


def validate(request: h11.Request, *, path: str) -> Accept | Reject:
    """Judge an upgrade request by RFC 6455 4.2.1; never raises, whatever the header bytes.

    Rules, in order: method GET; HTTP/1.1 or later; one syntactically valid Host; the
    comma-list headers printable ASCII; no body; Connection has the ``upgrade`` token and
    Upgrade the ``websocket`` token; one Sec-WebSocket-Version, ``13`` (else 426); one
    Sec-WebSocket-Key that is base64 of 16 bytes; the target's path is ``path`` (else 404).
    """
    headers = _headers_by_name(request.headers)
    if request.method != b"GET":
        return Reject(400, "the handshake's method must be GET")
    version = _HTTP_VERSION.fullmatch(request.http_version)
    if version is None or (int(version["major"]), int(version["minor"])) < (1, 1):
        return Reject(400, "the handshake needs HTTP/1.1 or later")
    hosts = headers.get(b"host", [])
    if len(hosts) != 1 or not is_valid_host(hosts[0]):
        return Reject(400, "the Host header must be one valid host[:port]")
    for name in _TOKEN_LIST_HEADERS:
        if any(not _PRINTABLE_ASCII.fullmatch(value) for value in headers.get(name, [])):
            return Reject(400, f"the {_display(name)} header is not printable ASCII")
    if b"transfer-encoding" in headers or any(
        value.lstrip(b"0") for value in headers.get(b"content-length", [])
    ):
        return Reject(400, "a handshake request has no body")
    if b"upgrade" not in _tokens(headers.get(b"connection", [])):
        return Reject(400, "not a WebSocket upgrade: Connection lacks the 'upgrade' token")
    if b"websocket" not in _tokens(headers.get(b"upgrade", [])):
        return Reject(400, "not a WebSocket upgrade: Upgrade lacks the 'websocket' token")
    if headers.get(b"sec-websocket-version") != [WEBSOCKET_VERSION]:
        return Reject(
            426,
            "unsupported Sec-WebSocket-Version: this server speaks 13",
            headers=((b"Sec-WebSocket-Version", WEBSOCKET_VERSION), (b"Upgrade", b"websocket")),
            connection=b"close, Upgrade",  # RFC 9110 15.5.22: a 426 names the upgrade
        )
    keys = headers.get(b"sec-websocket-key", [])
    if len(keys) != 1 or not _KEY.fullmatch(keys[0]):
        return Reject(400, "Sec-WebSocket-Key must be one base64-encoded 16-byte value")
    if request.target.split(b"?", 1)[0] != path.encode():
        return Reject(404, f"WebSocket endpoint is {path}")
    user_agents = headers.get(b"user-agent")
    return Accept(
        accept_token=base64.b64encode(hashlib.sha1(keys[0] + _ACCEPT_GUID).digest()),
        user_agent=user_agents[0] if user_agents else None,
        host=hosts[0],
        origins=tuple(headers.get(b"origin", ())),
        authorization=tuple(headers.get(b"authorization", ())),
    )


def check_origin(accept: Accept, origins: OriginCheck) -> Reject | None:
    """403 if the request's ``Origin`` may not connect (several Origin headers never may)."""
    if len(accept.origins) > 1:
        return Reject(403, "more than one Origin header")
    if origins.allows(accept.origins[0] if accept.origins else None, accept.host):
        return None
    return Reject(403, "origin not allowed")


def accept_response(accept: Accept) -> bytes:
    """The 101 answer: no extension and no subprotocol."""
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept.accept_token + b"\r\n\r\n"
    )


def reject_response(reject: Reject) -> bytes:
    """The whole error answer, framed by Content-Length so the client knows where it ends."""
    body = reject.reason.encode() + b"\n"
    lines = [
        b"HTTP/1.1 %d %s" % (reject.status, HTTPStatus(reject.status).phrase.encode()),
        b"Content-Type: text/plain; charset=utf-8",
        b"Content-Length: %d" % len(body),
        b"Connection: " + reject.connection,
        *(name + b": " + value for name, value in reject.headers),
    ]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class RequestReader:
    """Parses a request head with h11, refusing heads over ``max_head_bytes`` (431).

    Sans I/O: :meth:`feed` takes what the socket gave. After an accepted request,
    :meth:`trailing_data` gives the bytes the client sent after its head (frames it did
    not wait to send), which belong to the WebSocket connection.
    """

    def __init__(self, max_head_bytes: int = MAX_HEAD_BYTES) -> None:
        self._max_head_bytes = max_head_bytes
        self._parser = h11.Connection(h11.SERVER, max_incomplete_event_size=max_head_bytes)
        self._received = 0

    def feed(self, data: bytes | bytearray) -> h11.Request | Reject | None:
        """Add ``data`` (not empty); returns the request, a rejection, or None for more."""
        self._received += len(data)
        self._parser.receive_data(bytes(data))  # the same object when it is bytes already
        try:
            event = self._parser.next_event()
        except h11.RemoteProtocolError as error:
            if error.error_status_hint == 431:
                return self._too_large()
            return Reject(400, f"bad HTTP request: {str(error)[:_REASON_CHARS]}")
        if not isinstance(event, h11.Request):
            return None  # NEED_DATA: the head is not complete yet
        # h11 only limits incomplete heads; a complete one may have come in a big read.
        if self._received - len(self._parser.trailing_data[0]) > self._max_head_bytes:
            return self._too_large()
        return event

    def trailing_data(self) -> bytes:
        """The bytes after the head of a request :func:`validate` accepted.

        Such a request has no body and asks for an upgrade, so h11 ends its message at once
        and pauses with the rest of the input unread.
        """
        while (event := self._parser.next_event()) not in (h11.PAUSED, h11.NEED_DATA):
            assert isinstance(event, h11.EndOfMessage | h11.Data), event
        return self._parser.trailing_data[0]

    def _too_large(self) -> Reject:
        return Reject(431, f"request head over {self._max_head_bytes} bytes")


async def receive_request(
    stream: trio.abc.ReceiveStream, reader: RequestReader
) -> h11.Request | Reject | None:
    """Read until ``reader`` has a whole head or a rejection; None if the client left first."""
    while True:
        data = await stream.receive_some(RECEIVE_BYTES)
        if not data:
            return None
        outcome = reader.feed(data)
        if outcome is not None:
            return outcome


async def send_rejection(stream: trio.abc.HalfCloseableStream, reject: Reject) -> None:
    """Send the error answer, then close gently so that the client gets to read it.

    Closing a socket with unread input makes the kernel send a reset, and the reset can
    destroy our answer in the client's buffers. So: send, half-close (EOF), then read and
    discard what the client still sends, up to ``LINGER_MAX_BYTES`` for
    ``LINGER_TIMEOUT_S``; the caller closes the socket. Raises ``trio.BrokenResourceError``
    if the answer could not be sent.
    """
    await stream.send_all(reject_response(reject))
    await stream.send_eof()
    discarded = 0
    with trio.move_on_after(LINGER_TIMEOUT_S):
        while discarded < LINGER_MAX_BYTES:
            try:
                data = await stream.receive_some(RECEIVE_BYTES)
            except trio.BrokenResourceError:
                return  # reset by the client: it is gone, nothing to protect
            if not data:
                return
            discarded += len(data)


def _headers_by_name(headers: Iterable[tuple[bytes, bytes]]) -> dict[bytes, list[bytes]]:
    """Values per lower-case name, in order (h11 gives names lower-cased)."""
    by_name: dict[bytes, list[bytes]] = {}
    for name, value in headers:
        by_name.setdefault(name.lower(), []).append(value)
    return by_name


def _tokens(values: list[bytes]) -> set[bytes]:
    """The lower-cased elements of comma-separated header values (RFC 9110 5.6.1)."""
    return {token.strip(b" \t").lower() for value in values for token in value.split(b",")}


def _display(name: bytes) -> str:
    """``sec-websocket-key`` -> ``Sec-WebSocket-Key``, for reasons a human reads."""
    return "-".join(
        "WebSocket" if part == "websocket" else part.capitalize()
        for part in name.decode("ascii").split("-")
    )
