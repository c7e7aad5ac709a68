"""Fuzz cases after a valid handshake: frame sequences, one function per kind.

Every case opens with a valid upgrade and (nine times in ten) waits for the ``101``; the
rest pipeline the frames behind the request. Then come the kind's frames, one in ten of them
with byte mutations on top, and an ending: a close frame, a half-close, an RST or lingering.
"""

from __future__ import annotations

import json
import random

from tests.fuzz import hostile_json
from tests.fuzz.http_requests import valid_upgrade
from tests.fuzz.mutate import mutate, some_bytes
from tests.fuzz.plan import AwaitUpgrade, Ending, Plan, Send, Step, chunked
from tests.fuzz.wsframes import (
    BINARY,
    CLOSE,
    CONTINUATION,
    PING,
    PONG,
    RESERVED_OPCODES,
    TEXT,
    close_payload,
    encode_frame,
)

TOPICS = ("cpu", "overview", "regressions")
MAX_MESSAGE_BYTES = 65536  # the service's default --max-message-bytes
CLOSE_CODES = (
    0, 1, 999, 1000, 1001, 1002, 1003, 1004, 1005, 1006, 1007, 1008, 1009, 1010, 1011,
    1012, 1013, 1014, 1015, 1016, 1999, 2000, 2999, 3000, 3999, 4000, 4008, 4999, 5000,
    65535,
)  # fmt: skip
# A lone 0xff, a BOM-ish pair, an encoded surrogate, an overlong '/', a cut 3-byte sequence,
# a code point above U+10FFFF.
INVALID_UTF8 = (
    b"\xff",
    b"\xfe\xff",
    b"\xed\xa0\x80",
    b"\xc0\xaf",
    b"\xe2\x82",
    b"\xf4\x90\x80\x80",
)


def mask_key(rng: random.Random) -> bytes:
    """A client's masking key (sometimes all zeros, which is legal)."""
    return b"\x00\x00\x00\x00" if rng.random() < 0.05 else rng.randbytes(4)


def text(rng: random.Random, payload: bytes | str) -> bytes:
    """A masked text frame."""
    data = payload.encode() if isinstance(payload, str) else payload
    return encode_frame(TEXT, data, mask_key=mask_key(rng))


def _session(rng: random.Random, frames: bytes, *, keep_close: bool = True) -> Plan:
    """The valid handshake, then ``frames``, then an ending."""
    if rng.random() < 0.1:
        frames = mutate(rng, frames, rng.randint(1, 3))
    roll = rng.random()
    if roll < 0.4 and keep_close:
        frames += encode_frame(CLOSE, close_payload(1000), mask_key=mask_key(rng))
        ending = Ending.LINGER
    elif roll < 0.75:
        ending = Ending.HALF_CLOSE
    elif roll < 0.9:
        ending = Ending.RESET
    else:
        ending = Ending.LINGER
    handshake = valid_upgrade(rng, rng.choice((b"/ws", b"/ws", b"/ws?fuzz=1")))
    steps: tuple[Step, ...]
    if rng.random() < 0.1:
        steps = chunked(rng, handshake + frames)
    else:
        steps = (Send(handshake), AwaitUpgrade(), *chunked(rng, frames))
    return Plan(steps, ending)


def hostile_json_messages(rng: random.Random) -> Plan:
    """1-3 messages with hostile JSON: deep nesting, edge numbers, odd strings, almost-JSON."""
    frames = b""
    for _ in range(rng.randint(1, 3)):
        message = hostile_json.message(rng)
        if rng.random() < 0.1:
            message = hostile_json.garble(rng, message)
        payload = message.encode()
        roll = rng.random()
        if roll < 0.05:
            at = rng.randint(0, len(payload))
            payload = payload[:at] + rng.choice(INVALID_UTF8) + payload[at:]
        if roll > 0.95:
            frames += encode_frame(BINARY, payload, mask_key=mask_key(rng))
        else:
            frames += text(rng, payload)
    return _session(rng, frames)


def _topic_name(rng: random.Random, *, long: bool) -> str:
    """A topic name: a real one, an unknown one, an edge-length one, or an odd one."""
    roll = rng.random()
    if roll < 0.4:
        return rng.choice(TOPICS)
    if roll < 0.7:
        return "nope-" + str(rng.randrange(10_000))
    if roll < 0.85:
        lengths = (127, 128, 129, 1000, 10_000) if long else (127, 128, 129)
        return rng.choice("tx") * rng.choice(lengths)
    return rng.choice(("", " ", "\U0001f4a9", "cpu\u0000", "CPU", "overview ", "../cpu"))


def _topics_json(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.1:
        return rng.choice(("null", "{}", "[]", '"cpu"', "[[]]", "[1,2]", '{"cpu":1}'))
    count = rng.choice((1, 2, 3, 10, 99, 100, 101, 1000))
    names = [_topic_name(rng, long=count < 99) for _ in range(count)]
    if rng.random() < 0.2:
        names *= 2
    return "[" + ",".join(_json_string(name) for name in names) + "]"


def _json_string(name: str) -> str:
    """``name`` as a JSON string literal."""
    return json.dumps(name, ensure_ascii=False)


def subscriptions(rng: random.Random) -> Plan:
    """subscribe/unsubscribe with many, long, unknown or duplicate topics, or rapid churn."""
    frames = b""
    if rng.random() < 0.3:  # churn: first-subscriber queries, again and again
        for number in range(rng.randint(5, 40)):
            kind = "subscribe" if number % 2 == 0 else "unsubscribe"
            topics = rng.sample(TOPICS, rng.randint(1, 3))
            frames += text(rng, f'{{"type":"{kind}","topics":{_topic_array(topics)}}}')
    else:
        for _ in range(rng.randint(1, 5)):
            kind = rng.choice(("subscribe", "unsubscribe"))
            if rng.random() < 0.05:
                frames += text(rng, f'{{"type":"{kind}"}}')
            else:
                frames += text(rng, f'{{"type":"{kind}","topics":{_topics_json(rng)}}}')
    return _session(rng, frames)


def _topic_array(topics: list[str]) -> str:
    """A JSON array of plain topic names."""
    return "[" + ",".join(f'"{topic}"' for topic in topics) + "]"


def _ping_message(rng: random.Random) -> bytes:
    return text(rng, f'{{"type":"ping","id":{rng.randrange(1000)}}}')


def truncated_frame(rng: random.Random) -> Plan:
    """Valid messages, then a frame cut in its header or its payload."""
    frames = b"".join(_ping_message(rng) for _ in range(rng.randint(0, 3)))
    last = text(rng, hostile_json.message(rng) if rng.random() < 0.5 else '{"type":"ping"}')
    frames += last[: rng.randrange(1, len(last))]
    return _session(rng, frames, keep_close=False)


def random_after_handshake(rng: random.Random) -> Plan:
    """Random bytes where frames should be, sometimes after one valid message."""
    frames = _ping_message(rng) if rng.random() < 0.3 else b""
    frames += some_bytes(rng, rng.choice((1, 2, 14, 200, 4096)))
    return _session(rng, frames, keep_close=rng.random() < 0.3)


def reserved_bits(rng: random.Random) -> Plan:
    """Reserved opcodes, or RSV bits on an otherwise valid frame."""
    if rng.random() < 0.5:
        opcode = rng.choice(RESERVED_OPCODES)
        frame = encode_frame(opcode, some_bytes(rng, rng.randint(0, 40)), mask_key=mask_key(rng))
    else:
        opcode = rng.choice((TEXT, BINARY, PING, PONG, CLOSE, CONTINUATION))
        payload = b'{"type":"ping"}' if opcode == TEXT else b""
        frame = encode_frame(opcode, payload, rsv=rng.randint(1, 7), mask_key=mask_key(rng))
    frames = (_ping_message(rng) if rng.random() < 0.5 else b"") + frame
    return _session(rng, frames + _ping_message(rng))


def unmasked(rng: random.Random) -> Plan:
    """Client frames without a mask (RFC 6455 5.1: the server must fail the connection)."""
    opcode = rng.choice((TEXT, TEXT, BINARY, PING, CLOSE))
    payload = b'{"type":"ping","id":1}' if opcode == TEXT else b""
    if opcode == CLOSE:
        payload = close_payload(1000)
    return _session(rng, encode_frame(opcode, payload, mask_key=None))


def oversized_length(rng: random.Random) -> Plan:
    """Length headers that lie, overflow or are too long for a control frame."""
    style = rng.choice(("huge", "over_limit", "non_minimal", "control"))
    key = mask_key(rng)
    if style == "huge":
        declared = rng.choice((2**63 - 1, 2**63, 2**64 - 1, 10**9, 2**32, 2**32 + 1))
        frame = encode_frame(TEXT, b'{"type":"ping"}', mask_key=key, declared_length=declared)
    elif style == "over_limit":
        declared = rng.choice((MAX_MESSAGE_BYTES + 1, MAX_MESSAGE_BYTES * 2, 2**31))
        body = b'{"type":"ping","id":"' + b"x" * rng.choice((100, 70_000)) + b'"}'
        frame = encode_frame(TEXT, body, mask_key=key, declared_length=declared)
    elif style == "non_minimal":
        form = rng.choice(("16", "64"))
        frame = encode_frame(TEXT, b'{"type":"ping"}', mask_key=key, length_form=form)
    else:
        opcode = rng.choice((PING, PONG, CLOSE))
        payload = (close_payload(1000) if opcode == CLOSE else b"") + b"p" * rng.choice(
            (124, 126, 300, 70_000)
        )
        frame = encode_frame(opcode, payload, mask_key=key)
    return _session(rng, frame, keep_close=style != "huge")


def _control(rng: random.Random) -> bytes:
    opcode = rng.choice((PING, PING, PONG, CLOSE))
    payload = close_payload(1000) if opcode == CLOSE else rng.randbytes(rng.randint(0, 125))
    return encode_frame(opcode, payload, mask_key=mask_key(rng))


def fragmented(rng: random.Random) -> Plan:
    """A message in 2-70 fragments, with control frames (and mistakes) in between."""
    if rng.random() < 0.15:  # over --max-message-bytes in total: 1009
        message = ('{"type":"ping","id":"' + "f" * (MAX_MESSAGE_BYTES + 100) + '"}').encode()
        count = rng.choice((2, 20, 70))
    else:
        message = (
            hostile_json.message(rng) if rng.random() < 0.5 else '{"type":"ping","id":"é💩"}'
        ).encode()
        count = rng.randint(2, 10)
    count = min(count, len(message))
    cuts = sorted(rng.sample(range(1, len(message)), count - 1)) if count > 1 else []
    pieces = [message[a:b] for a, b in zip([0, *cuts], [*cuts, len(message)], strict=True)]
    opcode = BINARY if rng.random() < 0.1 else TEXT
    mistake = rng.choice(("none", "none", "new_start", "fragmented_control", "unfinished"))
    frames = b""
    for number, piece in enumerate(pieces):
        last = number == len(pieces) - 1
        fin = last and mistake != "unfinished"
        frame_opcode = opcode if number == 0 else CONTINUATION
        if mistake == "new_start" and number == len(pieces) // 2:
            frame_opcode = TEXT
        frames += encode_frame(frame_opcode, piece, fin=fin, mask_key=mask_key(rng))
        if not last and rng.random() < 0.4:
            frames += _control(rng)
        if mistake == "fragmented_control" and number == 0:
            frames += encode_frame(PING, b"a", fin=False, mask_key=mask_key(rng))
    return _session(rng, frames)


def stray_continuation(rng: random.Random) -> Plan:
    """Continuation frames with no message started, before or after a complete one."""
    continuation = encode_frame(
        CONTINUATION,
        rng.choice((b"", b'{"type":"ping"}', b"}")),
        fin=rng.random() < 0.7,
        mask_key=mask_key(rng),
    )
    if rng.random() < 0.5:
        frames = continuation + _ping_message(rng)
    else:
        frames = _ping_message(rng) + continuation
    return _session(rng, frames)


def close_frames(rng: random.Random) -> Plan:
    """Close frames with odd codes, long or invalid-UTF-8 reasons, 1-byte payloads, and data
    (or a second close) after them."""
    style = rng.random()
    if style < 0.1:
        payload = bytes([rng.randrange(256)])
    else:
        code = rng.choice((*CLOSE_CODES, None))
        reason = rng.choice(
            (b"", b"bye", b"r" * 123, b"r" * 124, "\u00e9".encode() * 61, *INVALID_UTF8)
        )
        payload = close_payload(code, reason if code is not None else b"")
    frames = encode_frame(CLOSE, payload, mask_key=mask_key(rng))
    if rng.random() < 0.3:
        frames += _ping_message(rng) + encode_frame(CLOSE, close_payload(1000), mask_key=None)
    return _session(rng, frames, keep_close=False)


def ping_flood(rng: random.Random) -> Plan:
    """Hundreds of WebSocket pings, unsolicited pongs, or JSON pings (the rate limit)."""
    style = rng.choice(("ws_ping", "pong", "json_ping", "mixed"))
    count = rng.choice((50, 200, 1000))
    frames = bytearray()
    for number in range(count):
        if style == "ws_ping" or (style == "mixed" and number % 3 == 0):
            frames += encode_frame(PING, rng.randbytes(rng.randint(0, 125)), mask_key=b"abcd")
        elif style == "pong" or (style == "mixed" and number % 3 == 1):
            frames += encode_frame(PONG, rng.randbytes(8), mask_key=b"abcd")
        else:
            frames += encode_frame(TEXT, b'{"type":"ping","id":%d}' % number, mask_key=b"abcd")
    return _session(rng, bytes(frames))
