"""Logging: one line per event on stderr, JSON by default, for our events and libraries' alike.

Our code logs through structlog; hypercorn, trio-websocket, httpx and the Python client
(``broadcaster.client``, a library, so it uses the standard ``logging``) log through the
standard library, whose records are rendered by the same structlog renderer, so an operator's
log pipeline sees one format.
"""

from __future__ import annotations

import logging
import sys

import structlog

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def configure_logging(log_format: str, level: str) -> None:
    """JSON objects, or ``key=value`` lines for people at a terminal, at ``level`` and above."""
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            timestamper,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processor=renderer,
            foreign_pre_chain=[
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                # Fields passed as ``extra`` (the Python client's) become keys of the line.
                structlog.stdlib.ExtraAdder(),
                timestamper,
                # A library's logged exception keeps its traceback, as text, in JSON lines too.
                structlog.processors.format_exc_info,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # Libraries are chatty at INFO (hypercorn's "Running on ..."); warnings are what matter.
    root.setLevel(max(LEVELS[level], logging.WARNING))
