"""Real notification receivers for the tests: an HTTP server for Apprise's ``json://`` URLs and
an SMTP server (aiosmtpd) for ``mailto://`` URLs, both on 127.0.0.1.

Apprise sends from worker threads over real sockets, so these are real servers: the HTTP one
runs in the test's nursery (h11 over a Trio listener, port 0) and can fail with 500 or never
answer; the SMTP one is aiosmtpd's ``Controller`` in its own thread.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass, field
from typing import Any

import h11
import trio
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

JSON = dict[str, Any]


@dataclass
class JsonReceiver:
    """An HTTP server that takes Apprise's JSON POSTs.

    ``statuses``: the answers to the first requests, in order (then 200); ``hang``: never
    answer (the request is counted, the connection held until the test ends).
    """

    statuses: list[int] = field(default_factory=list)
    hang: bool = False
    requests: int = 0
    accepted: list[JSON] = field(default_factory=list)
    port: int = 0
    _changed: trio.Event = field(default_factory=trio.Event)

    def url(self, path: str = "hook", **options: str) -> str:
        query = "&".join(f"{key}={value}" for key, value in options.items())
        return f"json://127.0.0.1:{self.port}/{path}" + (f"?{query}" if query else "")

    def titles(self) -> list[str]:
        return [str(notification["title"]) for notification in self.accepted]

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    async def wait_until(
        self, *, requests: int = 0, accepted: int = 0, timeout_s: float = 15
    ) -> None:
        """Until at least ``requests`` came in and ``accepted`` were answered 200."""
        with trio.fail_after(timeout_s):
            while self.requests < requests or len(self.accepted) < accepted:
                await self._changed.wait()

    async def _handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            connection = h11.Connection(h11.SERVER)
            body = b""
            while True:
                event = connection.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    connection.receive_data(data)
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    return
            self.requests += 1
            self._wake()
            if self.hang:
                await trio.sleep_forever()
            status = self.statuses.pop(0) if self.statuses else 200
            if status == 200:
                self.accepted.append(json.loads(body))
                self._wake()
            headers = [("content-length", "0"), ("connection", "close")]
            await stream.send_all(
                connection.send(h11.Response(status_code=status, headers=headers))
            )
            await stream.send_all(connection.send(h11.EndOfMessage()))

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()


class SmtpReceiver:
    """aiosmtpd in its thread on 127.0.0.1, no TLS, no authentication; keeps every message."""

    def __init__(self) -> None:
        self.messages: list[Envelope] = []
        self._token = trio.lowlevel.current_trio_token()
        self._changed = trio.Event()
        # aiosmtpd's Controller connects to its own port to check it started, so it needs a
        # real port number: one the kernel just handed out (then freed) is used.
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)

    def url(self) -> str:
        """A mailto:// URL for a plain local SMTP server: no user, so no login; ``mailto``
        (not ``mailtos``), so no TLS."""
        return (
            f"mailto://127.0.0.1:{self.port}"
            "?from=broadcaster@example.com&to=ops@example.com&mode=insecure"
        )

    def __enter__(self) -> SmtpReceiver:
        self._controller.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._controller.stop()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.messages.append(envelope)
        self._token.run_sync_soon(self._wake)
        return "250 OK"

    async def wait_until(self, count: int, timeout_s: float = 15) -> None:
        with trio.fail_after(timeout_s):
            while len(self.messages) < count:
                await self._changed.wait()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()
