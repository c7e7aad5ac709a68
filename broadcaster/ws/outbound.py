"""One connection's ordered output: written at once while the kernel takes it, queued when not.

Every frame for a client (welcome, pongs, pings, errors, updates, the close frame) goes
through :meth:`Outbound.push`, so frames never interleave. While nothing is queued, ``push``
writes the frame's bytes to the socket with one non-blocking ``os.write``: no task switch and
no Trio checkpoint, which is what lets the broadcast write one shared frame to thousands of
clients in a single synchronous loop. What the kernel does not take is queued and written
by a flusher task that waits for the socket to become writable; it exists only while
output is queued.

A client that is behind wants the newest value, not a backlog: while an update of a topic
is queued and not yet started, a newer update of that topic replaces it (latest wins) and
is counted in ``replaced_updates``. A client whose queue still grows past ``max_items``
frames or ``max_bytes`` bytes, or whose socket takes nothing for ``stall_timeout_s``, is
reported through ``on_slow``; the owner closes it. Nothing here ever waits on the client.

Over TLS (:mod:`broadcaster.ws.tls`) the connection attaches with an ``encrypt`` step: a frame
is turned into this connection's TLS records when it is written (the direct path) or when it
becomes the head of the queue, never earlier, so an unstarted update stays replaceable and
the records leave in the order they were made. Once encrypted, a frame is started: what the
kernel does not take stays at the head as ciphertext. Plain connections skip the step.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Awaitable, Callable, Iterable

import trio

from broadcaster.counters import Counters
from broadcaster.ws.frames import Frame, Outgoing

FlusherStarter = Callable[[Callable[[], Awaitable[None]]], None]
"""Starts a flusher task: given the coroutine function, runs it in the owner's nursery."""
Encrypt = Callable[[bytes], bytes]
"""A TLS connection's records for some plaintext (raises ``OSError`` once its session broke)."""


class _Ciphertext:
    """Bytes already encrypted for this connection, produced outside :meth:`Outbound.push`."""

    __slots__ = ("wire",)

    def __init__(self, wire: bytes) -> None:
        self.wire = wire


_Queued = Outgoing | _Ciphertext


def _ignore() -> None:
    """A detached outbound's ``on_broken``: nobody is left to tell."""


def _ignore_slow(reason: str) -> None:
    """A detached outbound's ``on_slow``: the connection is closed already."""


class Outbound:
    """The pending output of one connection and the task that flushes it."""

    __slots__ = (
        "_counters",
        "_drained",
        "_encrypt",
        "_fd",
        "_flushing",
        "_head_wire",
        "_head_written",
        "_on_broken",
        "_on_slow",
        "_queue",
        "_queued_bytes",
        "_start_flusher",
        "_unstarted_update",
        "accepting",
        "direct_fd",
        "last_update_unix_ms",
        "max_bytes",
        "max_items",
        "replaced_updates",
        "stall_timeout_s",
        "updates",
    )

    def __init__(
        self,
        *,
        max_items: int,
        max_bytes: int,
        stall_timeout_s: float,
        on_slow: Callable[[str], None],
        on_broken: Callable[[], None],
        counters: Counters | None = None,
    ) -> None:
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.stall_timeout_s = stall_timeout_s
        self.replaced_updates = 0
        self.updates = 0  # metrics_update frames handed over (sent, queued or since replaced)
        self.last_update_unix_ms: int | None = None
        self.accepting = True  # False once closing: no more updates
        self._on_slow = on_slow
        self._on_broken = on_broken
        self._counters = counters if counters is not None else Counters()
        self._queue: deque[_Queued] = deque()
        # The bytes of _queue[0] once it is started (its ciphertext over TLS), else None.
        self._head_wire: bytes | None = None
        self._head_written = 0  # bytes of _head_wire the kernel already took
        self._queued_bytes = 0  # bytes in _queue not yet written
        self._unstarted_update: dict[str, Frame] = {}  # topic -> its queued, unstarted update
        self._fd = -1  # -1: not attached (everything queues) or broken (nothing is written)
        self._encrypt: Encrypt | None = None  # set by attach for a TLS connection
        self._start_flusher: FlusherStarter | None = None
        self._flushing = False
        self._drained = trio.Event()
        # The socket while an update can be written at once (attached, accepting, nothing
        # queued), else -1: the one attribute the fan-out loop reads before writing. Set only
        # by _update_direct, after any change to what it depends on.
        self.direct_fd = -1

    # --- state -------------------------------------------------------------------------------

    @property
    def pending_items(self) -> int:
        """Frames queued, including one partly written."""
        return len(self._queue)

    @property
    def pending_bytes(self) -> int:
        """Bytes queued and not yet taken by the kernel."""
        return self._queued_bytes

    # --- attaching a socket ------------------------------------------------------------------

    def attach(
        self, fd: int, start_flusher: FlusherStarter, *, encrypt: Encrypt | None = None
    ) -> None:
        """Start writing to ``fd`` (a non-blocking socket); ``start_flusher`` runs the flusher
        task when output must wait for room (the owner starts it, in its nursery and inside
        its error boundary); ``encrypt`` turns each frame into the bytes to write (TLS).

        Frames pushed before (the welcome) are written now.
        """
        self._fd = fd
        self._encrypt = encrypt
        self._start_flusher = start_flusher
        self._write_queued()
        self._flush_later()
        self._update_direct()

    def detach(self) -> None:
        """Stop writing: the socket is about to close. Queued frames stay (see ``drain``)."""
        self._fd = -1
        self._update_direct()
        self._start_flusher = None
        self._drained.set()
        # The callbacks are the owner's bound methods: dropping them breaks the cycle
        # owner -> Outbound -> owner, so a closed connection is freed without the cyclic GC.
        self._on_slow = _ignore_slow
        self._on_broken = _ignore

    def stop_accepting(self) -> None:
        """Closing: updates are refused from now on (the close frame still goes out)."""
        self.accepting = False
        self._update_direct()

    def count_update(self, unix_ms: int) -> None:
        """An update was handed over outside :meth:`fan_out` (a cached value on subscribe)."""
        self.updates += 1
        self.last_update_unix_ms = unix_ms

    def _update_direct(self) -> None:
        """The one place ``direct_fd`` is set: the socket if an update may be written now."""
        ready = self.accepting and not self._queue and self._fd >= 0
        self.direct_fd = self._fd if ready else -1

    # --- the ordered path --------------------------------------------------------------------

    def push(self, item: Outgoing) -> None:
        """Write ``item`` now if nothing is queued before it, else queue it. Never blocks."""
        if self._queue or self._fd < 0:
            self._enqueue(item)
            return
        self._send_now(item, item.wire)

    def _send_now(self, item: _Queued, wire: bytes) -> bool:
        """The direct path, shared by :meth:`push` and :meth:`fan_out`: write ``wire`` to the
        socket now (encrypted first over TLS) and keep what the kernel did not take; False if
        the peer is gone."""
        if self._encrypt is not None:
            try:
                wire = self._encrypt(wire)
            except OSError:
                self._lost()
                return False
        written = self._write(wire)
        if written < 0:
            return False
        if written != len(wire):
            self._keep_rest(item, wire, written)
        return True

    def _keep_rest(self, item: _Queued, wire: bytes, written: int) -> None:
        """The kernel took part of ``wire`` (``item``'s bytes): the rest must follow before
        any other frame."""
        self._queue.append(item)
        self._update_direct()
        self._head_wire = wire
        self._head_written = written
        self._queued_bytes += len(wire) - written
        self._check_limits()
        self._flush_later()

    def push_ciphertext(self, data: bytes) -> None:
        """Queue TLS records made outside :meth:`push` (while reading, e.g. a KeyUpdate
        answer): they go right after the bytes encrypted before them, so before any frame
        not yet encrypted. Never blocks."""
        if not data:
            return
        if self._head_wire is not None:  # the head is encrypted: these follow it
            self._head_wire += data
            self._queued_bytes += len(data)
        elif self._queue or self._fd < 0:  # nothing encrypted is queued: these go first
            self._queue.appendleft(_Ciphertext(data))
            self._head_wire = data
            self._head_written = 0
            self._queued_bytes += len(data)
            self._update_direct()
            self._flush_later()
        else:
            written = self._write(data)
            if 0 <= written < len(data):
                self._keep_rest(_Ciphertext(data), data, written)

    def _enqueue(self, item: Outgoing) -> None:
        if isinstance(item, Frame) and item.topic is not None:
            topic = item.topic
            replaced = self._unstarted_update.pop(topic, None)
            if replaced is not None:
                self._queue.remove(replaced)
                self._queued_bytes -= len(replaced.wire)
                self.replaced_updates += 1
                self._counters.replaced_updates += 1
            self._unstarted_update[topic] = item
        self._queue.append(item)
        self._update_direct()
        self._queued_bytes += len(item.wire)
        self._check_limits()
        self._flush_later()  # already running, unless nothing was queued (or not attached)

    def _check_limits(self) -> None:
        if len(self._queue) > self.max_items:
            self._on_slow(f"more than {self.max_items} messages pending")
        elif self._queued_bytes > self.max_bytes:
            self._on_slow(f"more than {self.max_bytes} bytes pending")

    def discard_unsent(self) -> None:
        """Drop every queued frame except one the kernel has started to take (over TLS: one
        already encrypted, whose records the client's session expects)."""
        head_wire = self._head_wire
        committed = head_wire is not None and (self._head_written or self._encrypt is not None)
        keep = self._queue[0] if self._queue and committed else None
        self._queue.clear()
        self._unstarted_update.clear()
        self._queued_bytes = 0
        if keep is not None and head_wire is not None:
            self._queue.append(keep)
            self._queued_bytes = len(head_wire) - self._head_written
        else:
            self._head_wire = None
            self._head_written = 0

    def drain(self) -> list[Outgoing]:
        """Take every queued frame out, unsent (for a connection with no socket yet)."""
        taken = [item for item in self._queue if not isinstance(item, _Ciphertext)]
        self._queue.clear()
        self._unstarted_update.clear()
        self._queued_bytes = self._head_written = 0
        self._head_wire = None
        return taken

    async def wait_drained(self) -> None:
        """Return once everything queued is written, or the socket is detached or broken."""
        while self._queue and self._fd >= 0:
            self._drained = trio.Event()
            await self._drained.wait()

    # --- writing -----------------------------------------------------------------------------

    def _write(self, data: bytes | memoryview) -> int:
        """``os.write`` to the socket: bytes taken, 0 if none fit, -1 if the peer is gone."""
        try:
            return os.write(self._fd, data)
        except BlockingIOError:
            return 0
        except OSError:  # EPIPE, ECONNRESET: the peer is gone; the reader sees it too
            self._lost()
            return -1

    def _lost(self) -> None:
        """The peer is gone: drop what is queued, write nothing more, tell the owner."""
        if self._fd < 0:
            return
        self._fd = -1
        self._update_direct()
        self._queue.clear()
        self._unstarted_update.clear()
        self._queued_bytes = self._head_written = 0
        self._head_wire = None
        self._drained.set()
        self._on_broken()

    def _write_queued(self) -> bool:
        """Write queued frames in order until the kernel stops taking; whether any byte went."""
        progressed = False
        while self._queue and self._fd >= 0:
            wire = self._head_wire if self._head_wire is not None else self._start_head()
            if wire is None:
                return progressed  # the TLS session broke: the peer is gone
            data = memoryview(wire)[self._head_written :]
            written = self._write(data)
            if written <= 0:
                return progressed
            progressed = True
            self._queued_bytes -= written
            if written < len(data):
                self._head_written += written
                return progressed
            self._queue.popleft()
            self._head_wire = None
            self._head_written = 0
        self._drained.set()
        self._update_direct()
        return progressed

    def _start_head(self) -> bytes | None:
        """Start the head of the queue: no longer replaceable; encrypted now over TLS. Its
        bytes, or None if the TLS session broke."""
        head = self._queue[0]
        topic = head.topic if isinstance(head, Frame) else None
        if topic is not None and self._unstarted_update.get(topic) is head:
            del self._unstarted_update[topic]  # started: no longer replaceable
        wire = head.wire
        if self._encrypt is not None and not isinstance(head, _Ciphertext):
            try:
                wire = self._encrypt(wire)
            except OSError:
                self._lost()
                return None
            self._queued_bytes += len(wire) - len(head.wire)
        self._head_wire = wire
        return wire

    def _flush_later(self) -> None:
        if self._queue and not self._flushing and self._start_flusher is not None:
            self._flushing = True
            self._start_flusher(self._flush)

    async def _flush(self) -> None:
        """Wait for room in the socket and write, until the queue is empty."""
        try:
            stalled_since = trio.current_time()
            while self._queue and self._fd >= 0:
                deadline = stalled_since + self.stall_timeout_s
                with trio.move_on_at(deadline) as waiting:
                    await trio.lowlevel.wait_writable(self._fd)
                if waiting.cancelled_caught:
                    stalled_ms = round((trio.current_time() - stalled_since) * 1000)
                    self._on_slow(f"the client took no data for {stalled_ms} ms")
                    stalled_since = trio.current_time()
                    continue
                if self._write_queued():
                    stalled_since = trio.current_time()
        finally:
            self._flushing = False

    # --- many connections at once ------------------------------------------------------------

    @staticmethod
    def fan_out(outbounds: Iterable[Outbound], frame: Frame, unix_ms: int) -> int:
        """Hand one update to many connections without waiting; return how many took it.

        The broadcast's hot loop, kept to one object per connection: a connection with nothing
        queued gets the shared frame written at once; one that is behind has it queued (where it
        replaces an older unsent update of the topic); a closing one is skipped. The write is
        :meth:`push`'s own (``_send_now``), so a broadcast frame and a pushed one take the same
        path through partial writes (``_keep_rest``), queueing and a vanished peer (``_lost``).
        """
        wire = frame.wire
        delivered = 0
        for out in outbounds:
            if out.direct_fd >= 0:
                if not out._send_now(frame, wire):
                    continue
            elif out.accepting:
                out._enqueue(frame)
            else:
                continue
            out.updates += 1
            out.last_update_unix_ms = unix_ms
            delivered += 1
        return delivered
