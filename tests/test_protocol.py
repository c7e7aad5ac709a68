"""parse_client_message and the replies the server builds from client data.

The parser is the only gate between client JSON and the encoders. orjson reads what it cannot
write back (arrays nested deeper than 254) and reads integers beyond 64 bits as floats, so
the properties feed it arbitrary text, bytes and JSON (deep nesting, huge and edge integers,
astral characters, long strings) and require that it returns a message or raises
ProtocolViolation, nothing else; that every reply built from what it accepts encodes to valid
JSON, echoes a ping id with the same value and type, and stays within its size bound. The
examples are deterministic: see the Hypothesis profile in tests/conftest.py.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson
import pytest
from hypothesis import event, example, given
from hypothesis import strategies as st

from broadcaster import protocol
from broadcaster.protocol import (
    MAX_TOPIC_NAME_CHARS,
    MAX_TOPICS_PER_MESSAGE,
    ErrorCode,
    Ping,
    ProtocolViolation,
    Subscribe,
    Unsubscribe,
    parse_client_message,
)
from tests import REPO

# The documented limits, stated here so that changing them is deliberate.
PING_ID_MAX_CHARS = 128
UNKNOWN_TOPICS_NAMED = 3
# Size bounds of replies quoting client data. A character costs at most 6 bytes as JSON (a
# \u00XX escape) and 11 once Python's repr escape (\U000e0001) is JSON-escaped.
PONG_MAX_BYTES = 100 + 6 * PING_ID_MAX_CHARS
VIOLATION_ERROR_MAX_BYTES = 1024  # quotes at most 64 characters of an unknown type
INVALID_TOPIC_ERROR_MAX_BYTES = 256 + UNKNOWN_TOPICS_NAMED * (MAX_TOPIC_NAME_CHARS * 17 + 8)
PING_ID_RULE = (
    "'id' must be null, a boolean, a number of magnitude below 2^63 (or an integer up to "
    "2^64-1) or a string of at most 128 characters"
)
TOPICS_RULE = "'topics' must be a non-empty list of topic names"
SNAPSHOT_RULE = "'topic' must be a string of 1 to 128 characters"
TOPIC_NAME_RULE = "every topic must be a string of 1 to 128 characters"

# --- unit tests -----------------------------------------------------------------------------


def test_the_limits_are_the_documented_ones() -> None:
    assert protocol.MAX_PING_ID_CHARS == PING_ID_MAX_CHARS
    assert protocol.MAX_UNKNOWN_TOPICS_NAMED == UNKNOWN_TOPICS_NAMED


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('{"type": "ping"}', Ping(None)),
        ('{"type": "ping", "id": null}', Ping(None)),
        ('{"type": "ping", "id": true}', Ping(True)),
        ('{"type": "ping", "id": false}', Ping(False)),
        ('{"type": "ping", "id": 0}', Ping(0)),
        ('{"type": "ping", "id": -9223372036854775808}', Ping(-(2**63))),
        ('{"type": "ping", "id": 18446744073709551615}', Ping(2**64 - 1)),
        ('{"type": "ping", "id": 1.5}', Ping(1.5)),
        ('{"type": "ping", "id": -0.0}', Ping(-0.0)),
        ('{"type": "ping", "id": 9.2e18}', Ping(9.2e18)),
        ('{"type": "ping", "id": ""}', Ping("")),
        ('{"type": "ping", "id": "abc-1", "extra": [[[]]]}', Ping("abc-1")),
        ('{"type": "ping", "id": "' + "x" * 128 + '"}', Ping("x" * 128)),
        ('{"type": "ping", "id": "' + "\U0001f600" * 128 + '"}', Ping("\U0001f600" * 128)),
        ('{"type": "ping", "id": 1, "ignored": ' + "[" * 300 + "]" * 300 + "}", Ping(1)),
        ('{"type": "subscribe", "topics": ["b", "a", "b"]}', Subscribe(("b", "a"))),
        ('{"type": "unsubscribe", "topics": ["regressions"]}', Unsubscribe(("regressions",))),
        (
            json.dumps({"type": "subscribe", "topics": [f"t{n}" for n in range(100)]}),
            Subscribe(tuple(f"t{n}" for n in range(100))),
        ),
        (json.dumps({"type": "subscribe", "topics": ["x" * 128]}), Subscribe(("x" * 128,))),
        ('{"type": "snapshot", "topic": "latency-history"}', protocol.Snapshot("latency-history")),
    ],
)
def test_accepted_messages(raw: str, expected: protocol.ClientMessage) -> None:
    message = parse_client_message(raw)
    assert message == expected
    assert repr(message) == repr(expected)  # Ping(0) == Ping(False) and Ping(-0.0) == Ping(0.0)


@pytest.mark.parametrize(
    "id_literal",
    [
        "[]",
        "{}",
        "[1]",
        '{"n": 1}',
        "[" * 300 + "]" * 300,
        '"' + "x" * 129 + '"',
        '"' + "\U0001f600" * 129 + '"',
        "18446744073709551616",  # 2**64: orjson reads 1.8446744073709552e+19
        "-9223372036854775809",  # -2**63 - 1: orjson reads -9.223372036854776e+18
        "1208925819614629174706176",  # 2**80
        "9223372036854775808.0",  # 2**63 as a float
        "1e19",
    ],
)
def test_ping_ids_that_cannot_be_echoed_exactly_are_refused(id_literal: str) -> None:
    with pytest.raises(ProtocolViolation) as refused:
        parse_client_message('{"type": "ping", "id": ' + id_literal + "}")
    assert (refused.value.code, refused.value.message) == (ErrorCode.INVALID_MESSAGE, PING_ID_RULE)


@pytest.mark.parametrize(
    ("raw", "code", "message"),
    [
        (
            b'{"type": "ping"}',
            ErrorCode.BINARY_NOT_SUPPORTED,
            "binary frames are not supported; send JSON text",
        ),
        (
            "{not json",
            ErrorCode.INVALID_JSON,
            "message is not valid JSON: unexpected character, expected a string key: "
            "line 1 column 2 (char 1)",
        ),
        (
            "[" * 1025 + "]" * 1025,
            ErrorCode.INVALID_JSON,
            "message is not valid JSON: depth limit exceeded: line 1 column 1026 (char 1025)",
        ),
        (
            '{"type": "ping", "id": 1e400}',
            ErrorCode.INVALID_JSON,
            "message is not valid JSON: number is infinity when parsed as double: "
            "line 1 column 24 (char 23)",
        ),
        ("[1, 2, 3]", ErrorCode.INVALID_MESSAGE, "message must be a JSON object"),
        ('"ping"', ErrorCode.INVALID_MESSAGE, "message must be a JSON object"),
        ('{"topics": ["cpu"]}', ErrorCode.INVALID_MESSAGE, "message needs a string 'type'"),
        ('{"type": 1}', ErrorCode.INVALID_MESSAGE, "message needs a string 'type'"),
        (
            '{"type": "dance"}',
            ErrorCode.UNKNOWN_TYPE,
            "unknown message type 'dance'; expected ping, subscribe, unsubscribe, auth or snapshot",
        ),
        (
            json.dumps({"type": "d" * 100}),
            ErrorCode.UNKNOWN_TYPE,
            f"unknown message type {'d' * 64!r}; expected ping, subscribe, unsubscribe, auth"
            " or snapshot",
        ),
        ('{"type": "subscribe"}', ErrorCode.INVALID_MESSAGE, TOPICS_RULE),
        ('{"type": "snapshot"}', ErrorCode.INVALID_MESSAGE, SNAPSHOT_RULE),
        ('{"type": "snapshot", "topic": ""}', ErrorCode.INVALID_MESSAGE, SNAPSHOT_RULE),
        ('{"type": "snapshot", "topic": ["a"]}', ErrorCode.INVALID_MESSAGE, SNAPSHOT_RULE),
        (
            json.dumps({"type": "snapshot", "topic": "x" * 129}),
            ErrorCode.INVALID_MESSAGE,
            SNAPSHOT_RULE,
        ),
        ('{"type": "subscribe", "topics": "cpu"}', ErrorCode.INVALID_MESSAGE, TOPICS_RULE),
        ('{"type": "unsubscribe", "topics": []}', ErrorCode.INVALID_MESSAGE, TOPICS_RULE),
        ('{"type": "subscribe", "topics": [1, 2]}', ErrorCode.INVALID_MESSAGE, TOPIC_NAME_RULE),
        ('{"type": "subscribe", "topics": [""]}', ErrorCode.INVALID_MESSAGE, TOPIC_NAME_RULE),
        (
            json.dumps({"type": "subscribe", "topics": ["x" * 129]}),
            ErrorCode.INVALID_MESSAGE,
            TOPIC_NAME_RULE,
        ),
        (
            json.dumps({"type": "subscribe", "topics": [f"t{n}" for n in range(101)]}),
            ErrorCode.INVALID_MESSAGE,
            "at most 100 topics per message",
        ),
    ],
)
def test_refused_messages(raw: str | bytes, code: ErrorCode, message: str) -> None:
    with pytest.raises(ProtocolViolation) as refused:
        parse_client_message(raw)
    assert (refused.value.code, refused.value.message) == (code, message)


@pytest.mark.parametrize(
    ("ping_id", "encoded_id"),
    [
        (2**64 - 1, b'"id":18446744073709551615}'),
        (-0.0, b'"id":-0.0}'),
        ("\U0001f600", b'"id":"\xf0\x9f\x98\x80"}'),
    ],
)
def test_pong_echoes_the_id_as_sent(ping_id: protocol.PingId, encoded_id: bytes) -> None:
    assert protocol.pong(ping_id).encode().endswith(encoded_id)


def test_pong_without_an_id_has_no_id_field() -> None:
    assert set(orjson.loads(protocol.pong(None))) == {"type", "timestamp"}


@pytest.mark.parametrize(
    ("unknown", "message", "named"),
    [
        (["nope"], "unknown topic 'nope'", ["nope"]),
        (["a", "b", "c"], "unknown topics 'a', 'b', 'c'", ["a", "b", "c"]),
        (["a", "b", "c", "d", "e"], "unknown topics 'a', 'b', 'c' and 2 more", ["a", "b", "c"]),
    ],
)
def test_invalid_topic_error_names_a_few_and_counts_all(
    unknown: list[str], message: str, named: list[str]
) -> None:
    assert protocol.invalid_topic_error(unknown, 5) == (
        f"{message}; available topics: 5 (listed in welcome.topics)",
        {"topics": named, "unknownCount": len(unknown)},
    )


def test_invalid_topic_error_for_100_long_topics_is_under_1_kb() -> None:
    unknown = [f"{n:03d}" + "x" * 125 for n in range(100)]
    # It was 26.4 KB when the error listed every unknown and every available topic.
    assert len(_invalid_topic_reply(unknown, 2).encode()) < 1024


# --- what every reply must satisfy ----------------------------------------------------------


def _invalid_topic_reply(unknown: list[str], available: int) -> str:
    """The encoded error, built as the hub builds it."""
    message, fields = protocol.invalid_topic_error(unknown, available)
    return protocol.error(ErrorCode.INVALID_TOPIC, message, **fields)


def _check_reply(text: str, max_bytes: int | None = None) -> Any:
    """``text`` is valid JSON (read by the standard library), within ``max_bytes``."""
    if max_bytes is not None:
        assert len(text.encode()) <= max_bytes
    return json.loads(text)


def _parse(raw: str | bytes) -> protocol.ClientMessage | ProtocolViolation:
    """The parser's answer; any exception but ProtocolViolation propagates: a failure."""
    try:
        return parse_client_message(raw)
    except ProtocolViolation as violation:
        return violation


def _parse_and_reply(raw: str | bytes) -> protocol.ClientMessage | ProtocolViolation:
    """Parse ``raw`` and build each reply the server could send for it, checking each one."""
    outcome = _parse(raw)
    event(f"refused: {outcome.code}" if isinstance(outcome, ProtocolViolation) else "accepted")
    if isinstance(outcome, ProtocolViolation):
        assert outcome.code in set(ErrorCode)
        reply = protocol.error(outcome.code, outcome.message)
        assert _check_reply(reply, VIOLATION_ERROR_MAX_BYTES)["message"] == outcome.message
    elif isinstance(outcome, Ping):
        _check_reply(protocol.pong(outcome.id), PONG_MAX_BYTES)
    else:
        topics = sorted(outcome.topics)
        assert _check_reply(protocol.subscription_confirmed(topics))["topics"] == topics
        unknown = list(outcome.topics)  # the worst case: none of them is a topic
        error = _check_reply(_invalid_topic_reply(unknown, 100), INVALID_TOPIC_ERROR_MAX_BYTES)
        assert error["unknownCount"] == len(unknown)
        assert error["topics"] == unknown[:UNKNOWN_TOPICS_NAMED]
    return outcome


# --- strategies: JSON as text, so it can hold what Python's encoders refuse -----------------


def _array(items: list[str]) -> str:
    return "[" + ",".join(items) + "]"


def _object(fields: list[tuple[str, str]]) -> str:
    return "{" + ",".join(f"{key}:{value}" for key, value in fields) + "}"


def _nest(depth: int, inner: str, opener: str) -> str:
    closer = {"[": "]", '{"k":': "}"}
    openers = [opener] * depth if opener in closer else ["[", '{"k":'] * (depth // 2)
    return "".join(openers) + inner + "".join(closer[o] for o in reversed(openers))


texts = (
    st.text(st.characters(exclude_categories=()), max_size=24)  # lone surrogates included
    | st.text(min_size=120, max_size=136)  # around the 128-character limits
    | st.text(st.characters(min_codepoint=0x10000), min_size=120, max_size=136)  # astral
    | st.builds(str.__mul__, st.characters(exclude_categories=()), st.integers(0, 3000))
)
valid_topic_names = st.text(min_size=1, max_size=MAX_TOPIC_NAME_CHARS) | st.builds(
    str.__mul__, st.characters(min_codepoint=0x10000), st.integers(1, MAX_TOPIC_NAME_CHARS)
)


def _string_literal(text: str, ascii_only: bool) -> str:
    """``text`` as JSON, escaped or raw: a lone surrogate raw makes text orjson refuses."""
    return json.dumps(text, ensure_ascii=ascii_only)


string_literals = st.builds(_string_literal, texts, st.booleans())
EDGE_INTEGERS = [
    *(2**63 + d for d in (-1, 0, 1)),
    *(2**64 + d for d in (-1, 0, 1)),
    *(-(2**63) + d for d in (-1, 0, 1)),
    2**80,
    -(2**80),
    10**308,
    10**309,
]
integer_literals = st.one_of(
    st.integers(), st.integers(-(2**70), 2**70), st.sampled_from(EDGE_INTEGERS)
).map(str)
float_literals = st.floats(allow_nan=False, allow_infinity=False).map(repr) | st.sampled_from(
    ["-0", "-0.0", "1e19", "9.2e18", "9223372036854775808.0", "-9.3e18", "1e400", "1e-400"]
)
scalar_literals = st.one_of(
    st.sampled_from(["null", "true", "false"]), integer_literals, float_literals, string_literals
)
deep_literals = st.builds(
    _nest,
    st.sampled_from([253, 254, 255, 256, 1023, 1024, 1025]) | st.integers(200, 1100),
    scalar_literals,
    st.sampled_from(["[", '{"k":', "mixed"]),
)


def _containers(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.lists(inner, max_size=3).map(_array) | st.lists(
        st.tuples(string_literals, inner), max_size=3
    ).map(_object)


json_literals = st.recursive(scalar_literals | deep_literals, _containers, max_leaves=12)
topic_lists = st.lists(valid_topic_names, min_size=1, max_size=MAX_TOPICS_PER_MESSAGE) | st.lists(
    valid_topic_names | texts, min_size=1, max_size=MAX_TOPICS_PER_MESSAGE + 2
)
topic_list_literals = topic_lists.map(json.dumps) | json_literals


@st.composite
def message_literals(draw: st.DrawFn) -> str:
    """A JSON object, mostly shaped like a client message, with any values in its fields."""
    kind = draw(st.sampled_from(["ping", "subscribe", "unsubscribe", "other"]))
    fields = [('"type"', json.dumps(kind) if kind != "other" else draw(json_literals))]
    if draw(st.booleans()):
        fields.append(('"id"', draw(scalar_literals | json_literals)))
    if kind != "ping" or draw(st.booleans()):
        fields.append(('"topics"', draw(topic_list_literals)))
    fields += draw(st.lists(st.tuples(string_literals, json_literals), max_size=1))
    return _object(draw(st.permutations(fields)))


# --- properties -----------------------------------------------------------------------------


@given(st.text(st.characters(exclude_categories=())) | json_literals)
def test_any_text_is_parsed_or_refused_and_its_replies_encode(raw: str) -> None:
    _parse_and_reply(raw)


@given(message_literals())
def test_any_json_message_is_parsed_or_refused_and_its_replies_encode(raw: str) -> None:
    _parse_and_reply(raw)


@given(st.binary() | message_literals().map(lambda text: text.encode("utf-8", "surrogatepass")))
def test_any_bytes_are_refused_as_binary(raw: bytes) -> None:
    outcome = _parse_and_reply(raw)
    assert isinstance(outcome, ProtocolViolation)
    assert outcome.code == ErrorCode.BINARY_NOT_SUPPORTED


@given(json_literals | integer_literals | float_literals)
@example("[" * 255 + "]" * 255)
@example("18446744073709551616")
def test_a_ping_id_is_echoed_with_its_value_and_type_or_refused(id_literal: str) -> None:
    outcome = _parse_and_reply('{"type": "ping", "id": ' + id_literal + "}")
    if isinstance(outcome, ProtocolViolation):
        # orjson itself refuses 1e400, nesting deeper than 1024 and lone surrogates.
        if outcome.code != ErrorCode.INVALID_JSON:
            assert (outcome.code, outcome.message) == (ErrorCode.INVALID_MESSAGE, PING_ID_RULE)
        return
    assert isinstance(outcome, Ping)
    sent = json.loads(id_literal)  # the standard library keeps every integer exact
    echoed = json.loads(protocol.pong(outcome.id)).get("id")
    assert (type(echoed), repr(echoed)) == (type(sent), repr(sent))


@given(
    st.sampled_from(["subscribe", "unsubscribe"]),
    topic_lists,
    st.booleans(),
)
def test_topic_replies_encode_and_errors_stay_bounded(
    kind: str, topics: list[str], ascii: bool
) -> None:
    _parse_and_reply(json.dumps({"type": kind, "topics": topics}, ensure_ascii=ascii))


def test_every_failure_cause_is_in_the_protocol_docs_cause_table() -> None:
    """``cause`` is on the wire, so its vocabulary lives in protocol.py and is documented."""
    assert protocol.FailureCause.__module__ == "broadcaster.protocol"
    docs = (REPO / "docs" / "protocol.md").read_text()
    header = "| `cause` | Meaning |"
    table = docs[docs.index(header) + len(header) :].split("\n\n", 1)[0]
    documented = re.findall(r"^\s*\| `([a-z_]+)` \|", table, flags=re.MULTILINE)
    assert documented == [cause.value for cause in protocol.FailureCause]


def test_a_query_failure_error_names_its_topic_and_cause() -> None:
    message, fields = protocol.query_failed_error(
        "cpu", protocol.FailureCause.TIMEOUT, "query timed out after 5000 ms"
    )
    assert message == "InfluxDB query for topic 'cpu' failed: query timed out after 5000 ms"
    assert fields == {"topic": "cpu", "cause": "timeout"}
