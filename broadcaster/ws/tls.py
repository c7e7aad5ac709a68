"""TLS for the WebSocket server, done in memory so the fan-out keeps its shape.

``trio.SSLStream`` would give each client its own ``send_all`` (a task and an await per
client per tick), which the broadcast avoids (see :mod:`broadcaster.ws.outbound`). Here each
connection gets an :class:`ssl.SSLObject` over two :class:`ssl.MemoryBIO` s instead:
:meth:`TLSStream.encrypt` turns the shared frame's bytes into this connection's TLS records
synchronously, and the outbound path writes those records to the socket with the same
non-blocking ``os.write`` as a plain connection. The frame is still built once per tick;
only the encryption is per connection.

Order on the wire is the order in the outgoing BIO: every record leaves through one path.
Before the WebSocket upgrade is done (TLS handshake, HTTP request and answer) this stream
writes itself, awaiting each write. Once a connection's outbound path is attached, whatever
reading produces (a TLS 1.3 KeyUpdate answer, say) is handed to ``ciphertext_sink`` (the
outbound's :meth:`~broadcaster.ws.outbound.Outbound.push_ciphertext`), so it goes out right
after the records encrypted before it.

A client that speaks no TLS, or breaks it, sees its connection end: TLS errors surface as
``trio.BrokenResourceError``, the "peer is gone" of every other stream, never as a failure
of the server.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Callable
from pathlib import Path

import trio
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from broadcaster.errors import ConfigError

RECEIVE_BYTES = 16384  # one TLS record's plaintext at most
CERT_FLAG = "--tls-cert-file"
KEY_FLAG = "--tls-key-file"


def server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """The WebSocket server's TLS context: TLS 1.2 or newer, Python's server defaults
    (forward-secret AEAD ciphers, no compression, no renegotiation), ALPN ``http/1.1``.

    Raises:
        ConfigError: a file cannot be read, holds no PEM certificate or unencrypted PEM key,
            or the key does not belong to the certificate (naming the flag to fix).
    """
    cert_pem = _read(cert_file, CERT_FLAG)
    key_pem = _read(key_file, KEY_FLAG)
    try:
        x509.load_pem_x509_certificates(cert_pem)
    except ValueError as exc:
        raise ConfigError(CERT_FLAG, str(cert_file), f"no PEM certificate: {exc}") from None
    try:
        serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ConfigError(KEY_FLAG, str(key_file), f"no unencrypted PEM key: {exc}") from None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    context.set_alpn_protocols(["http/1.1"])
    try:
        context.load_cert_chain(cert_file, key_file)
    except ssl.SSLError as exc:
        problem = f"does not match the certificate in {cert_file}: {exc}"
        raise ConfigError(KEY_FLAG, str(key_file), problem) from None
    return context


def _read(path: Path, flag: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(flag, str(path), f"cannot be read: {exc.strerror}") from None


class TLSStream(trio.abc.HalfCloseableStream):
    """One accepted client's TLS channel over its ``trio.SocketStream`` (server side).

    ``socket`` is the client's socket, so code that writes to its descriptor directly keeps
    working; what it writes must come from :meth:`encrypt`.
    """

    def __init__(self, transport: trio.SocketStream, context: ssl.SSLContext) -> None:
        self.transport = transport
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        # Set once the outbound path writes to the socket: where bytes produced by reading go.
        self.ciphertext_sink: Callable[[bytes], None] | None = None

    @property
    def socket(self) -> trio.socket.SocketType:
        return self.transport.socket

    async def handshake(self) -> None:
        """The TLS handshake; the caller bounds it in time.

        Raises:
            trio.BrokenResourceError: the client left, or does not speak (valid) TLS.
        """
        while True:
            try:
                self._tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                await self._send_produced()
                await self._receive_ciphertext()
            except ssl.SSLError as exc:
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await self._send_produced()  # the alert, so the client knows why
                raise trio.BrokenResourceError(f"TLS handshake failed: {exc}") from exc
        await self._send_produced()

    def encrypt(self, plaintext: bytes | memoryview) -> bytes:
        """``plaintext`` as this connection's TLS records, with any record produced before it
        (everything in the outgoing BIO, in order). Never blocks.

        Raises:
            ssl.SSLError: the TLS session is broken (an ``OSError``: the peer is gone).
        """
        self._tls.write(plaintext)
        return self._outgoing.read()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Decrypted bytes; ``b""`` once the client sent close_notify or closed its socket.

        Raises:
            trio.BrokenResourceError: the client broke TLS (bad record, fatal alert).
        """
        while True:
            try:
                data = self._tls.read(max_bytes or RECEIVE_BYTES)
            except ssl.SSLWantReadError:
                await self._send_produced()
                if not await self._receive_ciphertext(eof_ok=True):
                    return b""
                continue
            except ssl.SSLZeroReturnError:
                data = b""
            except ssl.SSLError as exc:
                raise trio.BrokenResourceError(f"TLS error: {exc}") from exc
            await self._send_produced()
            return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Encrypt and send ``data`` (the upgrade's answer: before the outbound path owns
        the socket)."""
        try:
            self._tls.write(data)
        except ssl.SSLError as exc:
            raise trio.BrokenResourceError(f"TLS error: {exc}") from exc
        await self._send_produced()

    async def wait_send_all_might_not_block(self) -> None:
        await self.transport.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        """Send close_notify: TLS's end of output (reading may go on)."""
        with contextlib.suppress(ssl.SSLError):
            self._tls.unwrap()  # sends close_notify, then wants the client's (SSLWantReadError)
        await self._send_produced()

    async def aclose(self) -> None:
        await self.transport.aclose()

    async def _receive_ciphertext(self, *, eof_ok: bool = False) -> bool:
        """Read from the socket into the incoming BIO; False at EOF (if ``eof_ok``)."""
        data = await self.transport.receive_some(RECEIVE_BYTES)
        if not data:
            if eof_ok:
                return False
            raise trio.BrokenResourceError("the client closed the connection during TLS")
        self._incoming.write(data)
        return True

    async def _send_produced(self) -> None:
        """Send what the TLS session produced: through the outbound path once it is attached,
        else directly."""
        if not self._outgoing.pending:
            return
        data = self._outgoing.read()
        if self.ciphertext_sink is not None:
            self.ciphertext_sink(data)
        else:
            await self.transport.send_all(data)


ClientStream = trio.SocketStream | TLSStream
"""An accepted WebSocket client's byte stream: plain, or TLS over the socket."""
