"""Real TLS for tests: a certificate authority and a server certificate made per run (trustme),
written to files for the service's flags, and a blocking TLS WebSocket client that reads only
when told (the peer that falls behind, which no WebSocket library lets a test be).
"""

from __future__ import annotations

import socket
import ssl
import struct
from dataclasses import dataclass
from pathlib import Path

import trustme

UPGRADE_REQUEST = (
    b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


@dataclass(frozen=True)
class TLSFiles:
    """A server certificate for 127.0.0.1 and its key, in PEM files; ``client_context``
    trusts the CA that issued it."""

    cert_file: Path
    key_file: Path
    ca_file: Path
    client_context: ssl.SSLContext

    def flags(self) -> dict[str, str]:
        """The settings that turn TLS on, as ``start_service`` overrides."""
        return {"tls_cert_file": str(self.cert_file), "tls_key_file": str(self.key_file)}


def make_tls_files(directory: Path) -> TLSFiles:
    """A new CA, and a certificate it issued for 127.0.0.1 and localhost, in ``directory``."""
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file, ca_file = (directory / name for name in ("cert.pem", "key.pem", "ca.pem"))
    for index, pem in enumerate(issued.cert_chain_pems):
        pem.write_to_path(str(cert_file), append=index > 0)
    issued.private_key_pem.write_to_path(str(key_file))
    ca.cert_pem.write_to_path(str(ca_file))
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(context)
    return TLSFiles(cert_file, key_file, ca_file, context)


def tls_upgrade(
    port: int, context: ssl.SSLContext, *, receive_buffer_bytes: int | None = None
) -> ssl.SSLSocket:
    """A blocking TLS client that completes the WebSocket handshake on 127.0.0.1 and then
    reads only through :func:`read_frame` (call both through ``trio.to_thread.run_sync``)."""
    sock = socket.socket()
    if receive_buffer_bytes:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer_bytes)
    sock.settimeout(20)
    sock.connect(("127.0.0.1", port))
    tls = context.wrap_socket(sock, server_hostname="127.0.0.1")
    tls.sendall(UPGRADE_REQUEST)
    response = b""
    while not response.endswith(b"\r\n\r\n"):
        chunk = tls.recv(1)  # one byte at a time: nothing after the head is consumed
        if not chunk:
            raise ConnectionError("closed during the handshake")
        response += chunk
    assert response.startswith(b"HTTP/1.1 101"), response
    return tls


def read_frame(tls: ssl.SSLSocket) -> tuple[int, bytes]:
    """The next server frame (unmasked, unfragmented): its opcode and payload."""
    first, second = _exactly(tls, 2)
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", _exactly(tls, 2))
    elif length == 127:
        (length,) = struct.unpack("!Q", _exactly(tls, 8))
    return first & 0x0F, _exactly(tls, length)


def _exactly(tls: ssl.SSLSocket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = tls.recv(min(size - len(data), 1 << 20))
        if not chunk:
            raise ConnectionError("closed in the middle of a frame")
        data += chunk
    return bytes(data)
