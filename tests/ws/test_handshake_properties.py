"""Property tests of the handshake's pure side: no input -- any header names and values
(non-ASCII bytes included), targets, hosts, versions, or no HTTP at all -- makes
:class:`RequestReader` or :func:`validate` raise, every rejection is a framed HTTP answer,
and each rule agrees with an independent oracle (a strict base64 decoder, a host grammar).

Settings come from the deterministic profile registered in tests/conftest.py.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

import h11
from hypothesis import example, given
from hypothesis import strategies as st

from broadcaster.ws.handshake import Accept, Reject, reject_response, validate
from tests.handshake_requests import KEY, upgrade
from tests.ws.test_handshake_rules import decide, parse_response, status_of

TOKEN_LIST_HEADERS = (
    "Connection",
    "Upgrade",
    "Sec-WebSocket-Version",
    "Sec-WebSocket-Extensions",
    "Sec-WebSocket-Protocol",
)

# --- properties: any input gets a decision -------------------------------------------------

_TOKEN = st.from_regex(rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]{1,12}", fullmatch=True)
_NAMES = st.sampled_from(
    [name.encode() for name in (*TOKEN_LIST_HEADERS, "Host", "Sec-WebSocket-Key", "User-Agent")]
)


def field_value(data: bytes) -> bytes:
    """Any bytes made into a header value h11 accepts (it rejects NUL, CR, LF, FF, VT)."""
    return data.translate(bytes.maketrans(b"\x00\r\n\x0b\x0c", b"xxxxx")).strip(b" \t")


_VALUES = st.one_of(
    st.binary(max_size=40).map(field_value),
    st.sampled_from([b"websocket", b"Upgrade", b"13", KEY, b"127.0.0.1", b"[::1]:80", b""]),
)
_VERSIONS = st.one_of(
    st.sampled_from([b"1.1", b"1.0", b"2.0", b"0.9", b"9.9"]), st.binary(max_size=5)
)
_TARGETS = st.one_of(
    st.sampled_from([b"/ws", b"/ws?a=b", b"/", b"*", b"http://h/ws"]),
    st.from_regex(rb"[\x21-\x7e]{1,30}", fullmatch=True),
)


@given(
    headers=st.lists(st.tuples(st.one_of(_NAMES, _TOKEN), _VALUES), max_size=12),
    host=st.binary(max_size=30).map(field_value),
    target=_TARGETS,
    http_version=_VERSIONS,
    method=st.one_of(st.just(b"GET"), _TOKEN),
)
def test_validate_decides_any_request_h11_can_hold(
    headers: list[tuple[bytes, bytes]],
    host: bytes,
    target: bytes,
    http_version: bytes,
    method: bytes,
) -> None:
    headers = [(name, value) for name, value in headers if name.lower() != b"host"]
    request = h11.Request(
        method=method,
        target=target,
        headers=[(b"Host", host), *headers],
        http_version=http_version,
    )
    decision = validate(request, path="/ws")
    if isinstance(decision, Reject):
        assert decision.status in (400, 404, 426)
        parse_response(reject_response(decision))
    else:
        assert isinstance(decision, Accept)


_HEADER_LINE = st.tuples(
    st.one_of(_NAMES, _TOKEN, st.binary(max_size=12)), st.one_of(_VALUES, st.binary(max_size=40))
).map(lambda pair: pair[0] + b": " + pair[1].replace(b"\r\n", b""))


@given(
    line=st.tuples(
        st.one_of(st.just(b"GET"), st.binary(max_size=6)),
        st.one_of(_TARGETS, st.binary(max_size=20)),
        st.one_of(_VERSIONS.map(lambda version: b"HTTP/" + version), st.binary(max_size=10)),
    ),
    header_lines=st.lists(_HEADER_LINE, max_size=12),
    chunk_bytes=st.integers(1, 64),
)
@example(
    line=(b"GET", b"/ws", b"HTTP/1.1"),
    header_lines=[b"Host: xn--zz", b"Connection: Upgrade\xff", b"Upgrade: websocket"],
    chunk_bytes=7,
)
def test_any_request_head_gets_a_decision(
    line: tuple[bytes, bytes, bytes], header_lines: list[bytes], chunk_bytes: int
) -> None:
    raw = b"\r\n".join([b" ".join(line), *header_lines]) + b"\r\n\r\n"
    decision = decide(raw, chunk_bytes)
    if isinstance(decision, Reject):
        parse_response(reject_response(decision))
    else:  # an incomplete head (a line ending inside a value or name) waits for more
        assert decision is None or isinstance(decision, Accept)


@given(data=st.binary(max_size=300), chunk_bytes=st.integers(1, 64))
def test_any_bytes_get_a_decision_or_wait_for_more(data: bytes, chunk_bytes: int) -> None:
    decision = decide(data, chunk_bytes)
    assert decision is None or isinstance(decision, Accept | Reject)


# --- properties: each rule against an oracle ----------------------------------------------


def strict_16_bytes(key: bytes) -> bool:
    try:
        return len(binascii.a2b_base64(key, strict_mode=True)) == 16
    except binascii.Error:
        return False


@given(
    key=st.one_of(
        st.binary(max_size=30).map(field_value),
        st.binary(min_size=14, max_size=18).map(base64.b64encode),
        st.binary(min_size=16, max_size=16).map(lambda raw: base64.b64encode(raw).rstrip(b"=")),
    )
)
def test_a_key_is_accepted_iff_it_is_base64_of_16_bytes(key: bytes) -> None:
    decision = decide(upgrade(Sec_WebSocket_Key=key))
    assert isinstance(decision, Accept) == strict_16_bytes(key), decision
    if isinstance(decision, Accept):
        expected = hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()
        assert base64.b64decode(decision.accept_token) == expected


@given(version=st.one_of(st.binary(max_size=6).map(field_value), st.sampled_from([b"13"])))
def test_only_version_13_is_accepted(version: bytes) -> None:
    printable = all(0x20 <= byte <= 0x7E or byte == 0x09 for byte in version)
    expected = 101 if version == b"13" else 426 if printable else 400
    assert status_of(upgrade(Sec_WebSocket_Version=version)) == expected


# At most 21 characters or escapes: at most 63 characters, the longest label allowed.
_REG_NAME = st.from_regex(rb"(?:[A-Za-z0-9._~!$&'()*+,;=-]|%[0-9A-Fa-f]{2}){1,21}", fullmatch=True)
_VALID_HOST = st.tuples(
    st.one_of(
        _REG_NAME,
        st.ip_addresses(v=4).map(lambda ip: str(ip).encode()),
        st.ip_addresses(v=6).map(lambda ip: b"[" + str(ip).encode() + b"]"),
    ),
    st.one_of(st.just(b""), st.integers(0, 65535).map(lambda port: b":%d" % port)),
).map(b"".join)


@given(host=_VALID_HOST)
@example(host=b"xn--zz")  # IDNA would raise: never decoded
@example(host=b"xn--:80")
@example(host=b"a..b")  # an empty label: IDNA would raise
def test_every_valid_host_is_accepted(host: bytes) -> None:
    assert status_of(upgrade(Host=host)) == 101


@given(label=st.integers(64, 300), labels=st.integers(1, 4))
def test_a_label_over_63_characters_or_a_name_over_253_is_refused(label: int, labels: int) -> None:
    assert status_of(upgrade(Host=b".".join([b"a" * label] * labels))) == 400
    assert status_of(upgrade(Host=b".".join([b"a" * 63] * 4))) == 400  # 255 characters
    assert status_of(upgrade(Host=b".".join([b"a" * 63] * 3 + [b"a" * 61]))) == 101  # 253


@given(
    host=_VALID_HOST,
    bad=st.binary(min_size=1, max_size=3).map(lambda b: bytes(byte | 0x80 for byte in b)),
    at=st.integers(0, 40),
)
def test_a_host_with_a_non_ascii_byte_is_refused(host: bytes, bad: bytes, at: int) -> None:
    assert status_of(upgrade(Host=host[:at] + bad + host[at:])) == 400


@given(
    name=st.sampled_from(TOKEN_LIST_HEADERS),
    value=st.binary(max_size=20).map(field_value),
    bad=st.binary(min_size=1, max_size=3).map(lambda b: bytes(byte | 0x80 for byte in b)),
    at=st.integers(0, 20),
)
def test_a_token_list_with_a_non_ascii_byte_is_refused(
    name: str, value: bytes, bad: bytes, at: int
) -> None:
    decision = decide(upgrade(**{name.replace("-", "_"): value[:at] + bad + value[at:]}))
    assert isinstance(decision, Reject)
    assert decision.status == 400
    assert "not printable ASCII" in decision.reason


@given(
    tokens=st.lists(
        st.sampled_from([b"upgrade", b"Upgrade", b"UPGRADE", b"keep-alive", b"close", b""]),
        max_size=5,
    ),
    spaces=st.sampled_from([b",", b", ", b" ,\t", b",,"]),
)
def test_connection_is_a_case_insensitive_comma_list(tokens: list[bytes], spaces: bytes) -> None:
    value = spaces.join(tokens)
    accepted = any(token.lower() == b"upgrade" for token in tokens)
    assert status_of(upgrade(Connection=field_value(value))) == (101 if accepted else 400)
