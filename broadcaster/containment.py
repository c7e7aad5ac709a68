"""Containment: whatever goes wrong while serving one client ends that client, nothing more.

Every piece of work done for one connection runs inside :meth:`Containment.boundary` (or,
in a loop over many connections, reports through :meth:`Containment.report`), named by its
:class:`Stage`. What a failure at each stage ends:

=========  ==========================================================  =================
stage      the work                                                    the client gets
=========  ==========================================================  =================
handshake  reading and answering the upgrade request (ws_server)       HTTP 400
reader     reading and parsing the client's frames (connection)        close 1011
handler    acting on one complete client message (connection)          close 1011
flusher    writing queued output when the socket has room (outbound)   connection cut
heartbeat  pinging or timing out the connection (heartbeat)            connection cut
lifecycle  registering, refusing and forgetting the connection         close 1011
http       one HTTP connection on the status/health/metrics port       connection closed
=========  ==========================================================  =================

An ``Exception`` raised inside a boundary, alone or in an exception group, is logged at
error level with the connection id, the client's address and the traceback, counted by
stage (``broadcaster_connection_errors_total``), and handed to the boundary's
``on_failure``, which ends that one connection. ``trio.Cancelled`` and every other
``BaseException`` pass through untouched: they are how the service stops.

What the protocol foresees (bad JSON, oversized messages, floods, a peer that vanishes) is
not a failure: the code that reads it answers with an error or a close code. A boundary
catches what nobody foresaw, so that an unknown bug reached by one client's input costs that
client its connection and never the process, the accept loop or another client.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import structlog

log = structlog.get_logger("broadcaster.containment")


class Stage(enum.StrEnum):
    """Where serving one connection failed: the ``stage`` label of the error counter."""

    HANDSHAKE = "handshake"
    READER = "reader"
    HANDLER = "handler"
    FLUSHER = "flusher"
    HEARTBEAT = "heartbeat"
    LIFECYCLE = "lifecycle"
    HTTP = "http"


class Containment:
    """Makes the boundaries and counts what they caught, by stage."""

    def __init__(self) -> None:
        self.failures: dict[Stage, int] = dict.fromkeys(Stage, 0)

    def counts(self) -> dict[str, int]:
        """Failures caught so far, by stage name (every stage present)."""
        return {stage.value: count for stage, count in self.failures.items()}

    @contextmanager
    def boundary(
        self,
        stage: Stage,
        *,
        connection_id: str | None,
        address: str | None,
        on_failure: Callable[[], None],
    ) -> Iterator[None]:
        """Run the body; an ``Exception`` from it is reported and ends only this connection.

        Args:
            on_failure: ends the connection (answers 400, queues a 1011 close, or cuts it);
                it runs synchronously inside the handler, so it must not wait.

        Raises:
            BaseException: whatever is not an ``Exception`` (``trio.Cancelled``...), unchanged;
                from an exception group, the part that is not.
        """
        try:
            yield
        except BaseException as raised:
            failure, rest = _split(raised)
            if failure is None:
                raise
            self.report(stage, failure, connection_id=connection_id, address=address)
            try:
                on_failure()
            except Exception as second:  # ending the connection failed too: still contained
                self.report(stage, second, connection_id=connection_id, address=address)
            if rest is not None:
                raise rest from None

    def report(
        self,
        stage: Stage,
        failure: BaseException,
        *,
        connection_id: str | None,
        address: str | None,
    ) -> None:
        """Log ``failure`` with its traceback and count it against ``stage``."""
        self.failures[stage] += 1
        log.error(
            "connection failed",
            stage=stage.value,
            connection_id=connection_id,
            ip=address,
            error=repr(failure),
            exc_info=failure,
        )


def _split(raised: BaseException) -> tuple[BaseException | None, BaseException | None]:
    """``raised`` as (its ``Exception`` part, the rest); either may be None."""
    if isinstance(raised, BaseExceptionGroup):
        return raised.split(Exception)
    if isinstance(raised, Exception):
        return raised, None
    return None, raised
