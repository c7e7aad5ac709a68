"""Why a token was refused: the words a client reads in the 4001 close reason or in an
``invalid_token`` error.

Built here and only here, so tests and docs/protocol.md refer to one text. Every reason starts
with ``invalid token: ``, never contains the token, and stays far below the 123 bytes a
WebSocket close reason may hold (a value taken from the token, such as an algorithm name, is
shown only when it is short and plain).
"""

from __future__ import annotations

import re

from broadcaster.auth.identity import TENANT_PATTERN

PREFIX = "invalid token: "

MALFORMED = PREFIX + "malformed"
TOO_LONG = PREFIX + "too long"
SIGNATURE_FAILED = PREFIX + "signature verification failed"
EXPIRED = PREFIX + "token expired"
NOT_YET_VALID = PREFIX + "token not yet valid"
AUDIENCE_MISMATCH = PREFIX + "audience mismatch"
ISSUER_MISMATCH = PREFIX + "issuer mismatch"
UNKNOWN_KEY = PREFIX + "unknown key id"
KID_NEEDED = PREFIX + "header 'kid' needed"

_PLAIN_NAME = re.compile(r"[A-Za-z0-9]{1,16}")


def algorithm_not_allowed(algorithm: object) -> str:
    """``invalid token: algorithm HS512 not allowed`` (an odd value is not echoed)."""
    shown = (
        algorithm
        if isinstance(algorithm, str) and _PLAIN_NAME.fullmatch(algorithm)
        else "(unsupported)"
    )
    return f"{PREFIX}algorithm {shown} not allowed"


def missing_claim(name: str) -> str:
    """``invalid token: missing claim 'sub'``."""
    return f"{PREFIX}missing claim '{name}'"


def bad_claim(name: str, rule: str) -> str:
    """``invalid token: claim 'topics' must be ...``."""
    return f"{PREFIX}claim '{name}' {rule}"


BAD_SUB = bad_claim("sub", "must be a non-empty string")
BAD_EXP = bad_claim("exp", "must be a number")
BAD_IAT = bad_claim("iat", "must be a number")
BAD_TENANT = bad_claim("tenant", f"must match {TENANT_PATTERN.pattern}")
BAD_TOPICS = bad_claim("topics", "must be a list of non-empty strings")
