"""Hostile JSON text: deep nesting, edge numbers, odd strings, and almost-JSON.

Built as text, not from Python values, so that it can hold what no encoder writes: 1100
levels of nesting, 400-digit integers, lone surrogate escapes, invalid escapes. Every function
is a pure function of the ``random.Random`` it is given.
"""

from __future__ import annotations

import random

# Where JSON libraries draw lines: orjson refuses to encode 255 levels and to decode 1025;
# other libraries stop at 512 or 1000. Half of the depths are drawn from here.
DEPTH_EDGES = (127, 128, 253, 254, 255, 256, 257, 511, 512, 513, 999, 1000, 1022, 1023, 1024, 1025)
MIN_DEPTH = 100
MAX_DEPTH = 1100

NUMBERS = (
    str(2**64),
    str(2**80),
    str(-(2**63) - 1),
    str(2**63),
    str(-(2**64)),
    str(2**53 + 1),
    "9" * 400,
    "-" + "9" * 400,
    "1e308",
    "-1e308",
    "1e309",
    "-1e309",
    "1.7976931348623157e308",
    "5e-324",
    "1e-400",
    "-0",
    "-0.0",
    "0e0",
    "1E+2",
    "123456789012345678901234567890.5e-10",
    "0." + "1" * 500,
)
ALMOST_NUMBERS = ("01", "1.", ".5", "+1", "NaN", "Infinity", "-Infinity", "0x10", "1e", "--1")
LEAVES = ("", "1", '"x"', "null", "true", "{}", "[]")

_ASTRAL = "\U0001f4a9\U0001d11e\U00010348\U0010fffd"
_ODD_TEXT = (
    _ASTRAL,
    "\u202e\u0301\ufeff\u200b\ufffe\uffff",
    "caf\u00e9 \u4e2d\u6587 \u0639\u0631\u0628\u064a",
    "\U000e0041\U000e007f",
)
_ESCAPES_VALID = (
    "\\ud83d\\udca9",
    "\\u0000",
    "\\u001f",
    "\\\\",
    '\\"',
    "\\/",
    "\\b\\f\\n\\r\\t",
    "\\uFFFF",
)
_ESCAPES_INVALID = (
    "\\ud800",
    "\\udc00",
    "\\udc00\\ud800",
    "\\ud83d\\u0041",
    "\\x41",
    "\\u12",
    "\\uZZZZ",
    "\\q",
    "\\'",
    "\\U0001F4A9",
)


def depth(rng: random.Random) -> int:
    """A nesting depth in 100-1100, half of the time one of the ``DEPTH_EDGES``."""
    if rng.random() < 0.5:
        return rng.choice(DEPTH_EDGES)
    return rng.randint(MIN_DEPTH, MAX_DEPTH)


def nested(rng: random.Random, levels: int) -> str:
    """``levels`` nested arrays, objects or a mix of both, around a small leaf."""
    style = rng.choice(("array", "object", "mixed"))
    leaf = rng.choice(LEAVES)
    if style == "array":
        return "[" * levels + leaf + "]" * levels
    if style == "object":
        return '{"a":' * levels + (leaf or "1") + "}" * levels
    opens: list[str] = []
    for _ in range(levels):
        opens.append(rng.choice(('{"k":', "[", "[1,", '{"":')))
    closes = ["}" if opener.startswith("{") else "]" for opener in reversed(opens)]
    return "".join(opens) + (leaf or "0") + "".join(closes)


def number(rng: random.Random) -> str:
    """An edge-case number, sometimes one that JSON does not allow."""
    if rng.random() < 0.15:
        return rng.choice(ALMOST_NUMBERS)
    return rng.choice(NUMBERS)


def string(rng: random.Random) -> str:
    """A JSON string literal: long, unicode (astral too), or with odd or invalid escapes."""
    style = rng.choice(("long", "unicode", "escapes", "invalid_escape", "control", "mixed"))
    if style == "long":
        body = rng.choice("abcxyz") * rng.choice((129, 1000, 4096, 20_000, 60_000))
    elif style == "unicode":
        body = "".join(rng.choice(_ODD_TEXT) for _ in range(rng.randint(1, 50)))
    elif style == "escapes":
        body = "".join(rng.choice(_ESCAPES_VALID) for _ in range(rng.randint(1, 30)))
    elif style == "invalid_escape":
        body = "ok" + rng.choice(_ESCAPES_INVALID) + "ok"
    elif style == "control":
        body = "".join(chr(rng.randrange(0, 32)) for _ in range(rng.randint(1, 8)))
    else:
        pieces = (*_ODD_TEXT, *_ESCAPES_VALID, *_ESCAPES_INVALID, "plain")
        body = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 20)))
    if rng.random() < 0.05:
        return '"' + body  # unterminated
    return '"' + body + '"'


def wide(rng: random.Random) -> str:
    """A broad value: a long array or an object with many keys (some duplicated)."""
    count = rng.choice((1000, 5000, 10_000))
    if rng.random() < 0.5:
        return "[" + ",".join(str(i) for i in range(count)) + "]"
    return "{" + ",".join(f'"k{i % 700}":{i}' for i in range(count)) + "}"


def value(rng: random.Random) -> str:
    """Any hostile JSON value, deep nesting the most likely."""
    roll = rng.random()
    if roll < 0.4:
        return nested(rng, depth(rng))
    if roll < 0.6:
        return number(rng)
    if roll < 0.85:
        return string(rng)
    if roll < 0.93:
        return wide(rng)
    return rng.choice(("null", "true", "false", "{}", "[]", '""'))


def message(rng: random.Random) -> str:
    """One client message with a hostile value in one of its fields (or as the whole)."""
    hostile = value(rng)
    where = rng.choice(("ping_id", "ping_id", "topics", "topic_item", "type", "extra", "whole"))
    if where == "ping_id":
        return '{"type":"ping","id":' + hostile + "}"
    if where == "topics":
        kind = rng.choice(("subscribe", "unsubscribe"))
        return '{"type":"' + kind + '","topics":' + hostile + "}"
    if where == "topic_item":
        kind = rng.choice(("subscribe", "unsubscribe"))
        return '{"type":"' + kind + '","topics":["cpu",' + hostile + "]}"
    if where == "type":
        return '{"type":' + hostile + ',"id":1}'
    if where == "extra":
        return '{"type":"ping","id":7,"' + rng.choice(("x", "type", "id")) + '":' + hostile + "}"
    return hostile


def garble(rng: random.Random, text: str) -> str:
    """Almost-JSON: ``text`` truncated, with trailing garbage, a BOM, or a stray comma."""
    style = rng.choice(("truncate", "trailing", "bom", "comma", "single_quotes"))
    if style == "truncate" and text:
        return text[: rng.randrange(len(text))]
    if style == "trailing":
        return text + rng.choice(("}", "]", " x", ",", "\x00", '{"type":"ping"}'))
    if style == "bom":
        return "\ufeff" + text
    if style == "comma":
        return text[:-1] + ",}" if text.endswith("}") else text + ","
    return text.replace('"', "'")
