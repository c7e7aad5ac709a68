"""The wire protocol: message shapes, error codes, failure causes and close codes.

Server messages are encoded here, once, to JSON text; the same string goes to every
subscriber. Client messages are decoded and validated here into small typed values, or
rejected with a :class:`ProtocolViolation` carrying the error code the client will see.
docs/protocol.md is the reference for dashboard authors; keep the two in step.

The parser is the only place client JSON is judged. orjson reads more than it writes (arrays
nested deeper than 254; integers outside 64 bits come back as floats), so whatever a reply
quotes back (a ping ``id``, topic names, a ``type``) is narrowed here to values the builders
below encode exactly, and replies that quote client data have a bounded size.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, overload

import orjson

MAX_TOPICS_PER_MESSAGE = 100
MAX_TOPIC_NAME_CHARS = 128
MAX_PING_ID_CHARS = 128
# A JWT in an auth message: far above any real token, far below the message size limit.
MAX_TOKEN_CHARS = 16384
# An invalid_topic (forbidden_topic) error names this many unknown (forbidden) topics and
# counts the rest.
MAX_UNKNOWN_TOPICS_NAMED = 3
# orjson reads integers outside [-2**63, 2**64) as floats, so a float this large may be an
# integer it could not hold exactly; a smaller one came from a JSON fraction or exponent.
_PING_ID_FLOAT_LIMIT = 2.0**63
_PING_ID_RULE = (
    "'id' must be null, a boolean, a number of magnitude below 2^63 (or an integer up to "
    f"2^64-1) or a string of at most {MAX_PING_ID_CHARS} characters"
)


class ErrorCode(enum.StrEnum):
    """``code`` of an ``error`` message."""

    INVALID_JSON = "invalid_json"
    UNKNOWN_TYPE = "unknown_type"
    INVALID_TOPIC = "invalid_topic"
    INVALID_MESSAGE = "invalid_message"
    BINARY_NOT_SUPPORTED = "binary_not_supported"
    RATE_LIMITED = "rate_limited"
    INFLUXDB_UNAVAILABLE = "influxdb_unavailable"
    INVALID_TOKEN = "invalid_token"
    FORBIDDEN_TOPIC = "forbidden_topic"
    NOT_SUBSCRIBED = "not_subscribed"


class FailureCause(enum.StrEnum):
    """Why a topic's query failed: the ``cause`` field of its ``influxdb_unavailable`` error.

    It lives next to the error codes because it is part of the wire: dashboards tell "database
    unreachable" from "this topic is misconfigured" by it (docs/protocol.md lists every value).
    """

    UNAVAILABLE = "unavailable"
    TIMEOUT = "timeout"
    QUERY_REJECTED = "query_rejected"
    BAD_RESPONSE = "bad_response"
    INTERNAL = "internal_error"


class CloseCode(enum.IntEnum):
    """WebSocket close codes the server uses (RFC 6455 range, then the private 4000 range)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013
    HEARTBEAT_TIMEOUT = 4000
    AUTH_FAILED = 4001  # do not reconnect with the same token
    TOKEN_EXPIRED = 4005  # reconnect with a fresh token
    SLOW_CONSUMER = 4008
    REPLACED = 4009  # the same identity opened a newer connection


def iso_now() -> str:
    """Current UTC time as ISO-8601 with milliseconds and a ``Z``.

    The one timestamp format of the project (the wire, the HTTP API, topic data,
    ``broadcaster watch`` lines, the demo's log lines): ``2026-11-22T00:54:14.344Z``. Use these
    three helpers rather than a hand-written ``isoformat``.
    """
    return iso_from_datetime(datetime.now(UTC))


def iso_from_datetime(moment: datetime) -> str:
    """``moment`` as ISO-8601 UTC with milliseconds and a ``Z``."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@overload
def iso_from_unix_ms(unix_ms: float) -> str: ...
@overload
def iso_from_unix_ms(unix_ms: None) -> None: ...
@overload
def iso_from_unix_ms(unix_ms: float | None) -> str | None: ...
def iso_from_unix_ms(unix_ms: float | None) -> str | None:
    """Epoch milliseconds as ISO-8601 UTC with milliseconds and a ``Z``, or None for None."""
    if unix_ms is None:
        return None
    return iso_from_datetime(datetime.fromtimestamp(unix_ms / 1000, UTC))


def _encode(message: dict[str, Any]) -> str:
    return orjson.dumps(message).decode()


# --- server -> client -----------------------------------------------------------------------


def welcome(
    connection_id: str,
    topics: list[str],
    subscribed: list[str],
    broadcast_interval_ms: int,
    *,
    cluster: str | None = None,
    node_id: str = "",
    identity: WelcomeIdentity | None = None,
) -> str:
    """First message on every connection (with ``--auth-mode jwt``, after a valid token).

    ``topics`` are the topics this connection may subscribe to; ``cluster`` is the cluster's
    name (None: standalone) and ``node_id`` the process serving this connection;
    ``identity`` adds the token's ``identity`` and ``authExpiresAt``.
    """
    message: dict[str, Any] = {
        "type": "welcome",
        "connectionId": connection_id,
        "timestamp": iso_now(),
        "topics": topics,
        "subscribed": subscribed,
        "broadcastIntervalMs": broadcast_interval_ms,
        "cluster": cluster,
        "nodeId": node_id,
    }
    if identity is not None:
        message["identity"] = {"sub": identity.sub, "tenant": identity.tenant}
        message["authExpiresAt"] = iso_from_unix_ms(identity.expires_at_unix_s * 1000)
    return _encode(message)


@dataclass(frozen=True, slots=True)
class WelcomeIdentity:
    """What ``welcome`` says of the connection's token."""

    sub: str
    tenant: str | None
    expires_at_unix_s: float


def auth_refreshed(expires_at_unix_s: float) -> str:
    """Answer to an ``auth`` message that replaced the connection's token."""
    return _encode(
        {"type": "auth_refreshed", "authExpiresAt": iso_from_unix_ms(expires_at_unix_s * 1000)}
    )


def metrics_update(
    topic: str, seq: int, timestamp: str, data: Any, *, stale: bool, epoch: str
) -> str:
    """One topic's value at one tick. ``timestamp`` is when the value was read; ``epoch``
    names the numbering ``seq`` belongs to (it changes only when ``seq`` restarts)."""
    return _encode(
        {
            "type": "metrics_update",
            "topic": topic,
            "seq": seq,
            "epoch": epoch,
            "timestamp": timestamp,
            "stale": stale,
            "data": data,
        }
    )


def metrics_append(topic: str, seq: int, timestamp: str, data: Any, *, epoch: str) -> str:
    """What changed in a window topic's window at one tick: ``data`` holds the new window
    start (``from``), ``to``, ``asOf`` and only the new or changed rows of each series.
    ``seq`` continues the channel's ``metrics_update`` counter."""
    return _encode(
        {
            "type": "metrics_append",
            "topic": topic,
            "seq": seq,
            "epoch": epoch,
            "timestamp": timestamp,
            "data": data,
        }
    )


def subscription_confirmed(topics: list[str]) -> str:
    """The topics the connection is subscribed to after a subscribe or unsubscribe."""
    return _encode({"type": "subscription_confirmed", "topics": topics})


def pong(ping_id: PingId = None) -> str:
    """Answer to a client ``ping``; echoes its ``id`` (checked by the parser) when not null."""
    message: dict[str, Any] = {"type": "pong", "timestamp": iso_now()}
    if ping_id is not None:
        message["id"] = ping_id
    return _encode(message)


def error(code: ErrorCode, message: str, **extra: Any) -> str:
    """An ``error`` message; ``extra`` adds context fields such as ``topic``."""
    return _encode({"type": "error", "code": code.value, "message": message, **extra})


def invalid_topic_error(unknown: Sequence[str], available_count: int) -> tuple[str, dict[str, Any]]:
    """The ``message`` and extra fields of an ``invalid_topic`` error, for :func:`error`.

    The size is bounded whatever the request: the first ``MAX_UNKNOWN_TOPICS_NAMED`` unknown
    names (each at most ``MAX_TOPIC_NAME_CHARS``, checked by the parser), a count of all of
    them, and the number of available topics rather than the catalogue, which the client has
    in ``welcome.topics``. Listing everything made each bad subscribe a 2x amplifier.
    """
    named = list(unknown[:MAX_UNKNOWN_TOPICS_NAMED])
    more = len(unknown) - len(named)
    message = (
        f"unknown topic{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, named))}"
        f"{f' and {more} more' if more else ''}; "
        f"available topics: {available_count} (listed in welcome.topics)"
    )
    return message, {"topics": named, "unknownCount": len(unknown)}


def forbidden_topic_error(forbidden: Sequence[str]) -> tuple[str, dict[str, Any]]:
    """The ``message`` and extra fields of a ``forbidden_topic`` error, for :func:`error`.

    Bounded like :func:`invalid_topic_error`: the first ``MAX_UNKNOWN_TOPICS_NAMED`` refused
    names and a count of all of them (``welcome.topics`` lists what the connection may have).
    """
    named = list(forbidden[:MAX_UNKNOWN_TOPICS_NAMED])
    more = len(forbidden) - len(named)
    message = (
        f"not allowed to subscribe to {', '.join(map(repr, named))}"
        f"{f' and {more} more' if more else ''}: outside the token's topics, or a tenant "
        "topic without a tenant (the topics allowed are listed in welcome.topics)"
    )
    return message, {"topics": named, "forbiddenCount": len(forbidden)}


def not_subscribed_error(topic: str) -> tuple[str, dict[str, Any]]:
    """The ``message`` and extra fields of a ``not_subscribed`` error (a ``snapshot`` of a
    topic the connection does not follow)."""
    return f"not subscribed to {topic!r}: subscribe first", {"topic": topic}


def query_failed_error(topic: str, cause: FailureCause, detail: str) -> tuple[str, dict[str, Any]]:
    """The ``message`` and extra fields of a topic's ``influxdb_unavailable`` error.

    For :func:`error` with :attr:`ErrorCode.INFLUXDB_UNAVAILABLE`; ``detail`` says what went
    wrong in words, ``cause`` says it in the one word a dashboard can act on.
    """
    message = f"InfluxDB query for topic {topic!r} failed: {detail}"
    return message, {"topic": topic, "cause": cause.value}


def server_shutdown(reason: str, reconnect_after_ms: int) -> str:
    """Sent to every client before the server closes it with 1001."""
    return _encode(
        {
            "type": "server_shutdown",
            "reason": reason,
            "reconnectAfterMs": reconnect_after_ms,
            "timestamp": iso_now(),
        }
    )


# --- client -> server -----------------------------------------------------------------------


PingId = bool | int | float | str | None
"""A ping ``id`` that a pong can echo with the same value and JSON type."""


@dataclass(frozen=True, slots=True)
class Ping:
    """``{"type": "ping", "id"?: null | boolean | number | string}``."""

    id: PingId = None


@dataclass(frozen=True, slots=True)
class Subscribe:
    """``{"type": "subscribe", "topics": [str, ...]}``."""

    topics: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """``{"type": "unsubscribe", "topics": [str, ...]}``."""

    topics: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Auth:
    """``{"type": "auth", "token": str}``: the first message, or a refresh at any time."""

    token: str = field(repr=False)  # never in a log line


@dataclass(frozen=True, slots=True)
class Snapshot:
    """``{"type": "snapshot", "topic": str}``: the topic's whole value again, from memory
    (what a client that saw a gap in a window topic's ``seq`` asks for)."""

    topic: str


ClientMessage = Ping | Subscribe | Unsubscribe | Auth | Snapshot


class ProtocolViolation(Exception):
    """A client message that cannot be acted on; ``code`` and ``message`` go to the client."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code.value}: {message}")


def parse_client_message(raw: str | bytes) -> ClientMessage:
    """Decode and validate one client frame.

    Raises:
        ProtocolViolation: binary frame, invalid JSON, unknown type or malformed fields.
    """
    if isinstance(raw, bytes):
        raise ProtocolViolation(
            ErrorCode.BINARY_NOT_SUPPORTED, "binary frames are not supported; send JSON text"
        )
    try:
        message = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ProtocolViolation(
            ErrorCode.INVALID_JSON, f"message is not valid JSON: {exc}"
        ) from None
    if not isinstance(message, dict):
        raise ProtocolViolation(ErrorCode.INVALID_MESSAGE, "message must be a JSON object")
    kind = message.get("type")
    if not isinstance(kind, str):
        raise ProtocolViolation(ErrorCode.INVALID_MESSAGE, "message needs a string 'type'")
    if kind == "ping":
        return Ping(_ping_id(message.get("id")))
    if kind == "subscribe":
        return Subscribe(_topic_list(message))
    if kind == "unsubscribe":
        return Unsubscribe(_topic_list(message))
    if kind == "auth":
        return Auth(_token(message.get("token")))
    if kind == "snapshot":
        return Snapshot(_topic(message.get("topic")))
    raise ProtocolViolation(
        ErrorCode.UNKNOWN_TYPE,
        f"unknown message type {kind[:64]!r}; expected ping, subscribe, unsubscribe, auth"
        " or snapshot",
    )


def _topic(value: object) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_TOPIC_NAME_CHARS:
        raise ProtocolViolation(
            ErrorCode.INVALID_MESSAGE,
            f"'topic' must be a string of 1 to {MAX_TOPIC_NAME_CHARS} characters",
        )
    return value


def _token(value: object) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_TOKEN_CHARS:
        raise ProtocolViolation(
            ErrorCode.INVALID_MESSAGE,
            f"'token' must be a string of 1 to {MAX_TOKEN_CHARS} characters",
        )
    return value


def _ping_id(value: object) -> PingId:
    """``value`` if a pong can echo it exactly; anything else is refused, never coerced.

    Arrays and objects are refused because orjson reads nesting it cannot write back (the
    encoder stops at depth 254), long strings because the echo would amplify, and floats of
    magnitude 2**63 or more because they may be integers orjson rounded while reading.
    """
    if value is None or isinstance(value, int):  # bool is an int; orjson's fit 64 bits
        return value
    if isinstance(value, float) and abs(value) < _PING_ID_FLOAT_LIMIT:  # false for nan, inf
        return value
    if isinstance(value, str) and len(value) <= MAX_PING_ID_CHARS:
        return value
    raise ProtocolViolation(ErrorCode.INVALID_MESSAGE, _PING_ID_RULE)


def _topic_list(message: dict[str, Any]) -> tuple[str, ...]:
    topics = message.get("topics")
    if not isinstance(topics, list) or not topics:
        raise ProtocolViolation(
            ErrorCode.INVALID_MESSAGE, "'topics' must be a non-empty list of topic names"
        )
    if len(topics) > MAX_TOPICS_PER_MESSAGE:
        raise ProtocolViolation(
            ErrorCode.INVALID_MESSAGE, f"at most {MAX_TOPICS_PER_MESSAGE} topics per message"
        )
    if not all(isinstance(t, str) and 0 < len(t) <= MAX_TOPIC_NAME_CHARS for t in topics):
        raise ProtocolViolation(
            ErrorCode.INVALID_MESSAGE,
            f"every topic must be a string of 1 to {MAX_TOPIC_NAME_CHARS} characters",
        )
    return tuple(dict.fromkeys(topics))
