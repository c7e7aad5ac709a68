"""OriginPolicy: the table of rules, and properties over arbitrary header bytes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broadcaster.auth.origins import OriginPolicy, parse_origin, printable_origin

SAME_HOST = OriginPolicy(())
LISTED = OriginPolicy(("https://noc.example.com", "http://localhost:3000"))
ANY = OriginPolicy(("*",))

CASES = [
    # policy, origin, host, allowed
    (SAME_HOST, None, b"dash.example.com:8765", True),  # not a browser
    (SAME_HOST, None, None, True),
    (SAME_HOST, b"http://dash.example.com:8080", b"dash.example.com:8765", True),  # ports differ
    (SAME_HOST, b"https://DASH.example.com", b"dash.EXAMPLE.com", True),
    (SAME_HOST, b"http://127.0.0.1:8080", b"127.0.0.1:8765", True),
    (SAME_HOST, b"http://[::1]:8080", b"[::1]:8765", True),
    (SAME_HOST, b"https://evil.example", b"dash.example.com:8765", False),
    (SAME_HOST, b"http://dash.example.com.evil.example", b"dash.example.com", False),
    (SAME_HOST, b"http://dash.example.com", None, False),
    (SAME_HOST, b"http://dash.example.com", b"", False),
    (SAME_HOST, b"null", b"dash.example.com", False),
    (SAME_HOST, b"http://user@dash.example.com", b"dash.example.com", False),
    (SAME_HOST, b"http://dash.example.com/path", b"dash.example.com", False),
    (SAME_HOST, b"http://a.example http://b.example", b"a.example", False),
    (LISTED, b"https://noc.example.com", b"ws.example.com", True),
    (LISTED, b"HTTPS://NOC.example.com:443", b"ws.example.com", True),  # default port
    (LISTED, b"http://localhost:3000", b"127.0.0.1:8765", True),
    (LISTED, b"http://noc.example.com", b"noc.example.com", False),  # scheme differs
    (LISTED, b"https://noc.example.com:8443", b"noc.example.com", False),
    (LISTED, b"http://localhost:3001", b"localhost:3001", False),  # the list replaces same-host
    (LISTED, b"null", b"noc.example.com", False),
    (LISTED, None, b"noc.example.com", True),
    (ANY, b"https://anything.example", b"dash.example.com", True),
    (ANY, b"null", b"dash.example.com", True),
    (ANY, b"\xff\x00garbage", None, True),
]


@pytest.mark.parametrize(("policy", "origin", "host", "allowed"), CASES)
def test_origin_rules(
    policy: OriginPolicy, origin: bytes | None, host: bytes | None, allowed: bool
) -> None:
    assert policy.allows(origin, host) is allowed


def test_a_listed_origin_with_a_default_port_equals_one_without() -> None:
    policy = OriginPolicy(("http://noc.example.com:80",))
    assert policy.allows(b"http://noc.example.com", None)
    assert not policy.allows(b"https://noc.example.com", None)


def test_parse_origin_normalises_case_and_default_ports() -> None:
    assert parse_origin(b"HTTPS://Noc.Example.com:443") == (b"https", b"noc.example.com", None)
    assert parse_origin(b"http://noc.example.com:0080") == (b"http", b"noc.example.com", None)
    assert parse_origin(b"http://noc.example.com:8080") == (
        b"http",
        b"noc.example.com",
        b"8080",
    )
    assert parse_origin(b"http://noc.example.com:99999") is None


def test_an_entry_that_is_not_an_origin_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="not an origin"):
        OriginPolicy(("noc.example.com",))


header_bytes = st.none() | st.binary(max_size=80) | st.from_regex(rb"[a-z]+://[^/]{0,30}")


@given(origin=header_bytes, host=header_bytes)
def test_any_bytes_give_an_answer_never_an_error(origin: bytes | None, host: bytes | None) -> None:
    for policy in (SAME_HOST, LISTED, ANY):
        assert isinstance(policy.allows(origin, host), bool)
    if origin is not None:
        assert printable_origin(origin).isprintable()


@given(
    name=st.from_regex(
        r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?(\.[a-z0-9]{1,10}){0,3}", fullmatch=True
    ),
    origin_port=st.integers(1, 65535),
    host_port=st.integers(1, 65535),
    scheme=st.sampled_from(["http", "https"]),
)
def test_same_host_is_allowed_on_any_ports_and_case(
    name: str, origin_port: int, host_port: int, scheme: str
) -> None:
    origin = f"{scheme}://{name.upper()}:{origin_port}".encode()
    assert SAME_HOST.allows(origin, f"{name}:{host_port}".encode())
    assert not SAME_HOST.allows(origin, f"x{name}:{host_port}".encode())


def test_printable_origin_escapes_and_cuts() -> None:
    assert printable_origin(b"https://ok.example") == "https://ok.example"
    assert printable_origin(b"\xff\n") == "\\xff\\x0a"
    assert printable_origin(b"a" * 500).endswith("...")
