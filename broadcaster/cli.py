"""Command line: ``broadcaster serve [flags]``, ``broadcaster watch [flags] [URL]`` and
``broadcaster token [flags]`` (mint a development token, :mod:`broadcaster.auth.mint`).

For ``serve``, each setting is a flag, or else the environment variable
``BROADCASTER_<NAME>``, or else its default. A bad value exits with code 2 and one line
naming the setting and the value. ``watch`` is the terminal tail of
:mod:`broadcaster.client.watch`; it reads no environment variables.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any, NoReturn, TypeVar

import trio

from broadcaster import __version__
from broadcaster.auth.mint import add_token_command, run_token
from broadcaster.auth.startup import check_auth_files
from broadcaster.broadcast.pop_topics import BUILTIN_TOPICS
from broadcaster.broadcast.topics import build_catalog
from broadcaster.client.watch import add_watch_command, run_watch
from broadcaster.config import Settings, build_settings, env_name, flag_name
from broadcaster.errors import ConfigError
from broadcaster.logs import configure_logging

EXIT_USAGE = 2
EXIT_STARTUP_FAILED = 1


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (no usage dump) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"broadcaster: error: {message}\n")


def _settings_help(field: str) -> str:
    info = Settings.model_fields[field]
    default = info.default
    if isinstance(default, tuple):
        default = ",".join(default)
    return f"{info.description} (env {env_name(field)}; default: {default})"


def build_parser() -> argparse.ArgumentParser:
    """The parser, with one ``serve`` flag per settings field, and ``watch``."""
    parser = _OneLineParser(
        prog="broadcaster",
        description="Push live InfluxDB metrics to dashboards over WebSocket.",
    )
    parser.add_argument("--version", action="version", version=f"broadcaster {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_OneLineParser)
    serve = commands.add_parser("serve", help="run the service")
    for field, info in Settings.model_fields.items():
        if info.annotation is bool:  # a switch: present means on (the environment: true/false)
            serve.add_argument(
                flag_name(field),
                dest=field,
                action="store_const",
                const=True,
                default=None,
                help=_settings_help(field),
            )
        else:
            serve.add_argument(
                flag_name(field), dest=field, default=None, help=_settings_help(field)
            )
    add_watch_command(commands)
    add_token_command(commands)
    return parser


def settings_from(args: argparse.Namespace, environ: Mapping[str, str]) -> Settings:
    """Flags first, then environment variables; unset ones keep their defaults.

    Raises:
        ConfigError: a value is invalid.
    """
    values: dict[str, Any] = {}
    for field in Settings.model_fields:
        given = getattr(args, field)
        if given is None:
            given = environ.get(env_name(field))
        if given is not None:
            values[field] = given
    return build_settings(values)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``broadcaster`` console script."""
    args = build_parser().parse_args(argv)
    if args.command == "watch":
        sys.exit(run_watch(args))
    if args.command == "token":
        sys.exit(run_token(args))
    try:
        settings = settings_from(args, os.environ)
        # Built once, here, so that a bad topics file or default topic exits with code 2
        # before anything starts; the service is given this catalog, not the file.
        catalog = build_catalog(BUILTIN_TOPICS, settings.topics_file, settings.default_topics)
        check_auth_files(settings)  # a bad key or admin token file: exit 2 before any port
    except ConfigError as exc:
        sys.stderr.write(f"broadcaster: error: {exc}\n")
        sys.exit(EXIT_USAGE)
    configure_logging(settings.log_format, settings.log_level)
    from broadcaster.service import serve

    try:
        trio.run(partial(serve, settings, catalog=catalog, handle_signals=True))
    except* ConfigError as group:  # found while building the parts (a TLS or key file)
        sys.stderr.write(f"broadcaster: error: {_first_error(group)}\n")
        sys.exit(EXIT_USAGE)
    except* OSError as group:
        sys.stderr.write(f"broadcaster: error: cannot start: {_first_error(group)}\n")
        sys.exit(EXIT_STARTUP_FAILED)


_E = TypeVar("_E", bound=BaseException)


def _first_error(group: BaseExceptionGroup[_E]) -> _E:
    """The first error in ``group``, however deep the service's nurseries nested it."""
    first = group.exceptions[0]
    return _first_error(first) if isinstance(first, BaseExceptionGroup) else first
