"""``broadcaster token``: mint an HS256 (or HS384/HS512) token for development and tests.

    broadcaster token --secret-file F --sub alice [--tenant acme] [--topics a,b] [--ttl 1h]
                      [--audience X] [--issuer Y] [--algorithm HS256]

prints the token and exits 0; a bad value exits 2 with one line. A minted token is what
``--auth-mode jwt --jwt-secret-file F`` accepts (with the same ``--jwt-audience`` and
``--jwt-issuer``).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import Any

import jwt

from broadcaster.auth.identity import TENANT_PATTERN
from broadcaster.auth.keys import HMAC_ALGORITHMS, algorithms_for_secret, read_secret_file
from broadcaster.errors import ConfigError

EXIT_USAGE = 2
DEFAULT_TTL = "1h"
_TTL = re.compile(r"(?P<amount>[0-9]{1,9})(?P<unit>[smhd]?)")
_SECONDS_PER_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_ttl(text: str) -> int:
    """``90s``, ``30m``, ``1h``, ``1d`` or a number of seconds -> seconds (at least 1).

    Raises:
        ValueError: anything else.
    """
    match = _TTL.fullmatch(text.strip())
    if match is None or int(match["amount"]) < 1:
        raise ValueError(f"invalid value {text!r}: a duration such as 90s, 30m, 1h, 1d or 3600")
    return int(match["amount"]) * _SECONDS_PER_UNIT[match["unit"]]


def mint_token(
    secret: bytes,
    sub: str,
    *,
    ttl_s: int,
    tenant: str | None = None,
    topics: tuple[str, ...] | None = None,
    audience: str | None = None,
    issuer: str | None = None,
    algorithm: str = "HS256",
    now_unix_s: float | None = None,
) -> str:
    """A signed token with ``sub``, ``iat``, ``exp = iat + ttl_s`` and the optional claims."""
    issued_at = int(time.time() if now_unix_s is None else now_unix_s)
    claims: dict[str, Any] = {"sub": sub, "iat": issued_at, "exp": issued_at + ttl_s}
    if tenant is not None:
        claims["tenant"] = tenant
    if topics is not None:
        claims["topics"] = list(topics)
    if audience is not None:
        claims["aud"] = audience
    if issuer is not None:
        claims["iss"] = issuer
    return jwt.encode(claims, secret, algorithm=algorithm)


def _ttl(text: str) -> int:
    try:
        return parse_ttl(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _tenant(text: str) -> str:
    if not TENANT_PATTERN.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"invalid value {text!r}: must match {TENANT_PATTERN.pattern}"
        )
    return text


def _sub(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("invalid value '': must not be empty")
    return text


def _topics(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    if not names:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: no topic names")
    return names


def add_token_command(commands: Any) -> None:
    """Add the ``token`` subcommand to the ``broadcaster`` parser's subparsers."""
    parser = commands.add_parser(
        "token",
        help="mint an HS256 token for development and tests, and print it",
        description="Mint a token signed with the secret of --secret-file and print it.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add("--secret-file", type=Path, required=True, help="the service's --jwt-secret-file")
    add("--sub", type=_sub, required=True, help="the token's subject (who holds it)")
    add("--tenant", type=_tenant, default=None, help="the tenant claim")
    add("--topics", type=_topics, default=None, help="comma-separated names or glob patterns")
    add("--ttl", type=_ttl, default=DEFAULT_TTL, help="lifetime: 90s, 30m, 1h, 1d or seconds")
    add("--audience", default=None, help="the aud claim (the service's --jwt-audience)")
    add("--issuer", default=None, help="the iss claim (the service's --jwt-issuer)")
    add("--algorithm", choices=HMAC_ALGORITHMS, default="HS256", help="signature algorithm")


def run_token(args: argparse.Namespace) -> int:
    """Print the token ``args`` describe; the exit code (2 with one line for a bad file)."""
    try:
        secret = read_secret_file(args.secret_file, "--secret-file")
        if args.algorithm not in algorithms_for_secret(secret):
            raise ConfigError(
                "--algorithm",
                args.algorithm,
                f"the secret of --secret-file is {len(secret)} bytes, too short for it",
            )
    except ConfigError as exc:
        sys.stderr.write(f"broadcaster: error: {exc}\n")
        return EXIT_USAGE
    token = mint_token(
        secret,
        args.sub,
        ttl_s=args.ttl,
        tenant=args.tenant,
        topics=args.topics,
        audience=args.audience,
        issuer=args.issuer,
        algorithm=args.algorithm,
    )
    sys.stdout.write(token + "\n")
    return 0
