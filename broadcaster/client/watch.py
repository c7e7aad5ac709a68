"""``broadcaster watch [--topics a,b] [--token-file F] [--ca-file F] [URL]``: a terminal tail
of a broadcaster.

Without ``--topics`` it follows the service's default topics (its ``--default-topics``, as
each ``welcome`` says them), so the list is defined once, in the service's settings.

One line per update (the value's time, topic, seq, fresh/STALE, a compact summary of the
data), one per status change (state, attempt k/N, retry delay, RTT, quality) and one per
``error`` message, on stdout, flushed at once. SIGINT (Ctrl-C) or SIGTERM closes the
connection cleanly and exits 0.

With a service that runs ``--auth-mode jwt``: ``--token-file`` is read again before every
connection attempt and every in-band refresh (it is the client's token provider, so a
program that rewrites the file keeps the watch authenticated); ``--token`` passes the token
itself, which any local user can read in ``ps`` (prefer the file). The token is not taken
from the environment: ``broadcaster watch`` reads no environment variables. When the server
closes with 4001 (invalid or missing token) or 4009 (replaced by a newer connection of the
same identity) the watch does not reconnect: it prints the reason on stderr and exits
with :data:`EXIT_STOPPED`. ``--ca-file`` trusts a private CA for ``wss://``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import ssl
import sys
from functools import partial
from pathlib import Path
from typing import Any, TextIO

import trio

from broadcaster.client.auth import TokenProvider
from broadcaster.client.backoff import HeartbeatPolicy, ReconnectPolicy
from broadcaster.client.client import BroadcasterClient, open_client
from broadcaster.client.link import parse_url
from broadcaster.client.messages import JSON, MetricsUpdate
from broadcaster.client.status import ClientStatus, ClientStopped, ConnectionState
from broadcaster.logs import LEVELS, configure_logging
from broadcaster.protocol import iso_now

DEFAULT_URL = "ws://127.0.0.1:8765/ws"
SUMMARY_CHARS = 120
EXIT_USAGE = 2
EXIT_STOPPED = 3
"""The server closed with 4001 or 4009: reconnecting as is would not help."""


def _brief(value: Any) -> str:
    if isinstance(value, dict):
        return f"{{{len(value)}}}"
    if isinstance(value, list):
        return f"[{len(value)}]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def summarize(data: Any, width: int = SUMMARY_CHARS) -> str:
    """``key=value`` for the top-level fields; lists as ``[n]``, objects as ``{n}``."""
    if isinstance(data, dict):
        text = " ".join(f"{key}={_brief(value)}" for key, value in data.items())
    else:
        text = _brief(data)
    return text if len(text) <= width else text[: width - 3] + "..."


def format_update(update: MetricsUpdate) -> str:
    """``2026-11-22T00:54:14.344Z  overview  #3  fresh  popCount=24 up=24 ...``"""
    flag = "STALE" if update.stale else "fresh"
    return f"{update.timestamp}  {update.topic}  #{update.seq}  {flag}  {summarize(update.data)}"


def format_status(status: ClientStatus, now: str) -> str:
    """``<now>  status  reconnecting (attempt 2/5)  retry in 10.8 s  rtt=-  quality=-``"""
    parts = [now, "status", status.describe()]
    if status.connection_id is not None:
        parts.append(f"id={status.connection_id}")
    if status.retry_in_s is not None and not status.probing:
        what = "probe" if status.state is ConnectionState.SERVER_DOWN else "retry"
        parts.append(f"{what} in {status.retry_in_s:.1f} s")
    rtt = "-" if status.rtt_ms is None else f"{status.rtt_ms:.1f} ms"
    quality = "-" if status.quality is None else status.quality.value
    parts.append(f"rtt={rtt}  quality={quality}")
    if status.auth_error:
        parts.append(f"refresh failed: {status.auth_error}")
    stopped = status.state is ConnectionState.STOPPED  # describe() says why already
    if status.state is not ConnectionState.CONNECTED and status.last_error and not stopped:
        parts.append(f"last: {status.last_error}")
    return "  ".join(parts)


def format_error(message: JSON, now: str) -> str:
    """``<now>  error  influxdb_unavailable  topic=cpu  InfluxDB query ... failed``"""
    topic = message.get("topic")
    where = f"  topic={topic}" if topic is not None else ""
    return f"{now}  error  {message.get('code')}{where}  {message.get('message')}"


def _emit(out: TextIO, line: str) -> None:
    out.write(line + "\n")
    out.flush()


async def _print_updates(client: BroadcasterClient, out: TextIO) -> None:
    async for update in client:
        _emit(out, format_update(update))


async def _print_statuses(client: BroadcasterClient, out: TextIO) -> None:
    async for status in client.status_changes():
        _emit(out, format_status(status, iso_now()))


def token_file_provider(path: Path) -> TokenProvider:
    """A token provider that reads ``path`` (surrounding whitespace stripped) at each call,
    in a worker thread."""

    async def read() -> str:
        return (await trio.Path(path).read_text(encoding="utf-8")).strip()

    return read


async def watch(
    url: str,
    topics: tuple[str, ...] | None,
    *,
    reconnect: ReconnectPolicy,
    heartbeat: HeartbeatPolicy,
    connect_timeout_s: float,
    out: TextIO,
    token: str | TokenProvider | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> ClientStopped | None:
    """Print updates, status changes and errors until SIGINT or SIGTERM, or until the server
    closes with 4001 or 4009: then return why.

    ``topics`` None: the service's default topics (``welcome.subscribed``).
    """
    stopped: ClientStopped | None
    try:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with (
                open_client(
                    url,
                    topics,
                    reconnect=reconnect,
                    heartbeat=heartbeat,
                    connect_timeout_s=connect_timeout_s,
                    on_error=lambda message: _emit(out, format_error(message, iso_now())),
                    token=token,
                    ssl_context=ssl_context,
                ) as client,
                trio.open_nursery() as tasks,
            ):
                tasks.start_soon(_print_updates, client, out)
                tasks.start_soon(_print_statuses, client, out)
                async for _ in signals:
                    break
                tasks.cancel_scope.cancel()
    except* ClientStopped as group:
        # except* keeps the nesting of the nurseries it came through: find the leaf.
        first: BaseException = group
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        stopped = first if isinstance(first, ClientStopped) else None
    else:
        stopped = None
    return stopped


# --- command line ----------------------------------------------------------------------------


def _topics(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    if not names:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: no topic names")
    return names


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: must be at least 1")
    return value


def _ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: not a number") from None
    if not 0 <= value <= 10:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: must be from 0 to 10")
    return value


def add_watch_command(commands: Any) -> None:
    """Add the ``watch`` subcommand to the ``broadcaster`` parser's subparsers."""
    defaults, beat = ReconnectPolicy(), HeartbeatPolicy()
    watch_parser = commands.add_parser(
        "watch",
        help="print live updates and connection status (a terminal tail)",
        description="Print live updates and connection status until Ctrl-C.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = watch_parser.add_argument
    add("url", nargs="?", default=DEFAULT_URL, help="the service's WebSocket URL")
    add(
        "--topics",
        type=_topics,
        default=None,
        help="comma-separated (default: the service's default topics, its --default-topics)",
    )
    number = partial(add, type=_positive_int)
    number("--base-delay-ms", default=_ms(defaults.base_delay_s), help="wait before attempt 1")
    number("--max-delay-ms", default=_ms(defaults.max_delay_s), help="cap of the backoff")
    add(
        "--jitter-ratio",
        type=_ratio,
        default=defaults.jitter_ratio,
        help="each wait adds uniform(0, ratio * wait)",
    )
    number(
        "--max-attempts",
        default=defaults.max_attempts,
        help="failed attempts in a row after which the server is down",
    )
    number(
        "--probe-interval-ms",
        default=_ms(defaults.probe_interval_s),
        help="time between two probes while the server is down",
    )
    number("--ping-interval-ms", default=_ms(beat.interval_s), help="time between two pings")
    number(
        "--pong-timeout-ms",
        default=_ms(beat.pong_timeout_s),
        help="no pong after this long: the link is dead",
    )
    number("--connect-timeout-ms", default=10_000, help="deadline of connect and welcome")
    secret = watch_parser.add_mutually_exclusive_group()
    secret.add_argument(
        "--token-file",
        type=Path,
        default=None,
        help="a file holding the token (JWT), read again before every connection and refresh",
    )
    secret.add_argument(
        "--token",
        default=None,
        help="the token itself (visible to local users in ps: prefer --token-file)",
    )
    add("--ca-file", type=Path, default=None, help="trust this CA (PEM) for a wss:// URL")
    add("--log-level", choices=list(LEVELS), default="error", help="client logs, on stderr")


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def _trusting(ca_file: Path) -> ssl.SSLContext:
    """The default TLS checks, trusting the CA certificates in ``ca_file`` too."""
    try:
        return ssl.create_default_context(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"--ca-file: cannot load {str(ca_file)!r}: {exc}") from None


def run_watch(args: argparse.Namespace) -> int:
    """Run ``broadcaster watch`` from parsed arguments; returns the exit code."""
    if args.max_delay_ms < args.base_delay_ms:
        sys.stderr.write(
            f"broadcaster: error: --max-delay-ms: invalid value '{args.max_delay_ms}': "
            f"must be at least --base-delay-ms ({args.base_delay_ms})\n"
        )
        return EXIT_USAGE
    ssl_context = None
    try:
        reconnect = ReconnectPolicy(
            base_delay_s=args.base_delay_ms / 1000,
            max_delay_s=args.max_delay_ms / 1000,
            jitter_ratio=args.jitter_ratio,
            max_attempts=args.max_attempts,
            probe_interval_s=args.probe_interval_ms / 1000,
        )
        heartbeat = HeartbeatPolicy(args.ping_interval_ms / 1000, args.pong_timeout_ms / 1000)
        parse_url(args.url)
        if args.token is not None and not args.token.strip():
            raise ValueError("--token: the token is empty")
        if args.ca_file is not None:
            ssl_context = _trusting(args.ca_file)
    except ValueError as exc:
        sys.stderr.write(f"broadcaster: error: {exc}\n")
        return EXIT_USAGE
    token: str | TokenProvider | None = args.token.strip() if args.token else None
    if args.token_file is not None:
        token = token_file_provider(args.token_file)
    configure_logging("console", args.log_level)
    # The client logs through the standard library; configure_logging keeps libraries at
    # warning and above, but here the client's own lines are what --log-level is about.
    logging.getLogger("broadcaster.client").setLevel(LEVELS[args.log_level])
    stopped = None
    # Ctrl-C before the signal handler is installed: still a clean exit.
    with contextlib.suppress(KeyboardInterrupt):
        stopped = trio.run(
            partial(
                watch,
                args.url,
                args.topics,
                reconnect=reconnect,
                heartbeat=heartbeat,
                connect_timeout_s=args.connect_timeout_ms / 1000,
                out=sys.stdout,
                token=token,
                ssl_context=ssl_context,
            )
        )
    if stopped is not None:
        sys.stderr.write(f"broadcaster: stopped: {stopped}; not reconnecting\n")
        return EXIT_STOPPED
    return 0
