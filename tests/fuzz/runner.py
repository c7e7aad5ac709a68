"""Run one fuzz case on a fresh TCP connection and say how the server answered.

The runner sends the case's steps while a reader task takes whatever the server writes (so a
server that answers while we send never blocks on us), then ends the connection as the case
says. Everything happens under one deadline: a case never takes longer than ``deadline_s``
plus the time to close a socket.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from dataclasses import dataclass, field

import trio

from tests.fuzz.plan import AwaitUpgrade, Case, Ending, Send, Step

CASE_DEADLINE_S = 3.0
LINGER_S = 0.4
RESET_AFTER_S = 0.05
KEPT_ANSWER_BYTES = 256
RECEIVE_BYTES = 65536


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the server did with one case.

    ``ended``: ``closed`` (the server closed, FIN), ``reset`` (the server reset), ``lingered``
    (still open after the linger time), ``client_reset`` (we reset it, as planned),
    ``deadline`` (still open when the case's deadline passed) or ``refused`` (no connection).
    """

    answer_head: bytes
    received_bytes: int
    ended: str
    elapsed_s: float

    @property
    def status(self) -> str:
        """The answer's status line (``HTTP/1.1 400``), ``frames`` or ``none``."""
        if self.answer_head.startswith(b"HTTP/"):
            return self.answer_head[:12].decode("latin-1")
        return "frames" if self.answer_head else "none"


@dataclass
class _Answer:
    head: bytearray = field(default_factory=bytearray)
    received: int = 0
    reset: bool = False
    head_done: trio.Event = field(default_factory=trio.Event)
    eof: trio.Event = field(default_factory=trio.Event)


async def run_case(
    case: Case,
    port: int,
    *,
    deadline_s: float = CASE_DEADLINE_S,
    linger_s: float = LINGER_S,
    host: str = "127.0.0.1",
) -> Outcome:
    """Connect to ``host:port``, play ``case``, and close; never raises for network errors."""
    started = trio.current_time()
    try:
        stream = await trio.open_tcp_stream(host, port)
    except OSError:
        return Outcome(b"", 0, "refused", trio.current_time() - started)
    answer = _Answer()
    ended = "deadline"
    try:
        with trio.move_on_after(deadline_s):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_read, stream, answer)
                await _send(stream, case.plan.steps, answer)
                ended = await _finish(stream, case.plan.ending, answer, linger_s)
                nursery.cancel_scope.cancel()
    finally:
        if case.plan.ending is Ending.RESET or ended == "deadline":
            stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await stream.aclose()
    return Outcome(bytes(answer.head), answer.received, ended, trio.current_time() - started)


async def _read(stream: trio.SocketStream, answer: _Answer) -> None:
    try:
        while data := await stream.receive_some(RECEIVE_BYTES):
            answer.received += len(data)
            if len(answer.head) < KEPT_ANSWER_BYTES:
                answer.head += data[: KEPT_ANSWER_BYTES - len(answer.head)]
            if b"\r\n\r\n" in answer.head or not _may_be_http(answer.head):
                answer.head_done.set()
    except trio.BrokenResourceError:
        answer.reset = True
    except trio.ClosedResourceError:
        return
    answer.head_done.set()
    answer.eof.set()


async def _send(stream: trio.SocketStream, steps: tuple[Step, ...], answer: _Answer) -> None:
    for step in steps:
        if isinstance(step, AwaitUpgrade):
            await answer.head_done.wait()
            if not answer.head.startswith(b"HTTP/1.1 101"):
                return
            continue
        assert isinstance(step, Send)
        if step.pause_s:
            await trio.sleep(step.pause_s)
        if answer.eof.is_set():
            return
        try:
            await stream.send_all(step.data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return


async def _finish(
    stream: trio.SocketStream, ending: Ending, answer: _Answer, linger_s: float
) -> str:
    if ending is Ending.RESET:  # after a moment, or the server may never read what we sent
        with trio.move_on_after(RESET_AFTER_S):
            await answer.eof.wait()
        return "client_reset"
    if ending is Ending.HALF_CLOSE:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await stream.send_eof()
        await answer.eof.wait()
    else:
        with trio.move_on_after(linger_s):
            await answer.eof.wait()
        if not answer.eof.is_set():
            return "lingered"
    return "reset" if answer.reset else "closed"


def _may_be_http(head: bytearray) -> bool:
    """Whether ``head`` can still become an HTTP status line (else it is frames or junk)."""
    return head.startswith(b"HTTP/"[: len(head)])
