"""Every input that ever crashed or hung the service, found by the fuzzer (issue 9).

One named test per defect. Each sends the exact bytes, on a fresh TCP connection, to the real
service (``python -m broadcaster serve`` as a subprocess against the session's influxd), then
asserts that the process is still running and that a bystander subscribed to ``cpu`` still
gets consecutive updates. One process serves the whole module; a test that finds it dead
(because an earlier test crashed it) starts a new one first, so each test stands alone.

The fuzz cases that first found each defect are named in the tests' docstrings as
``generate_case(seed, index)`` (``tests/fuzz``) when the fuzzer found it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import trio

from tests.fuzz import AwaitUpgrade, Case, Ending, Plan, Send
from tests.fuzz.plan import Port
from tests.fuzz.runner import run_case
from tests.fuzz.service import ServiceUnderTest, write_points
from tests.fuzz.witnesses import Bystander, HealthProbe
from tests.fuzz.wsframes import TEXT, encode_frame
from tests.influxd import Influxd
from tests.wsclient import eventually

DATABASE = "fuzz_regressions"
CRASH_WAIT_S = 0.5
EXIT_WAIT_S = 5.0
ROUND_WAIT_S = 0.1
RACE_COPIES = 20
RACE_ROUNDS = 5
UPDATES_AFTER = 2
UPDATES_TIMEOUT_S = 15.0
UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)

pytestmark = pytest.mark.fuzz


@pytest.fixture(scope="module")
def shared_service(
    influxd: Influxd, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceUnderTest]:
    influxd.query(f'CREATE DATABASE "{DATABASE}"')
    write_points(influxd, DATABASE)
    under_test = ServiceUnderTest(influxd, DATABASE, tmp_path_factory.mktemp("regressions"))
    under_test.start()
    yield under_test
    under_test.stop()
    influxd.query(f'DROP DATABASE "{DATABASE}"')


@pytest.fixture
def service(shared_service: ServiceUnderTest) -> ServiceUnderTest:
    """The module's service, restarted first if an earlier test crashed it."""
    shared_service.ensure_running()
    return shared_service


def handshake_with(*header_lines: bytes) -> bytes:
    """A valid upgrade with ``header_lines`` in place of the headers of the same names."""
    names = {line.split(b":", 1)[0].lower() for line in header_lines}
    lines = [
        line
        for line in UPGRADE.split(b"\r\n")[1:]
        if line and line.split(b":", 1)[0].lower() not in names
    ]
    return b"\r\n".join([b"GET /ws HTTP/1.1", *lines, *header_lines]) + b"\r\n\r\n"


def after_handshake(*frames: bytes) -> tuple[Send | AwaitUpgrade, ...]:
    """A valid upgrade, its 101, then ``frames``."""
    return (Send(UPGRADE), AwaitUpgrade(), Send(b"".join(frames)))


def text_frame(payload: bytes) -> bytes:
    return encode_frame(TEXT, payload, mask_key=b"\x01\x02\x03\x04")


async def assert_survives(
    service: ServiceUnderTest,
    *steps: Send | AwaitUpgrade,
    port: Port = "ws",
    copies: int = 1,
    rounds: int = 1,
) -> None:
    """Play ``steps`` on a new connection to ``port`` (``copies`` connections at once, for
    ``rounds`` rounds: a race needs company and repetition to show); the process must stay
    up and a bystander must go on getting consecutive updates."""
    bystander = Bystander(service.ws_url)
    case = Case(0, 0, "regression", port, Plan(steps, Ending.HALF_CLOSE))
    port_number = service.ws_port if port == "ws" else service.http_port
    async with trio.open_nursery() as nursery:
        await nursery.start(bystander.run)
        assert await _updates(bystander, UPDATES_AFTER), bystander.failures
        for _ in range(rounds):
            async with trio.open_nursery() as connections:
                for _ in range(copies - 1):
                    connections.start_soon(run_case, case, port_number)
                outcome = await run_case(case, port_number)
            if await service.exited_within(CRASH_WAIT_S if rounds == 1 else ROUND_WAIT_S):
                break
        got_updates = await _updates(bystander, len(bystander.seqs) + UPDATES_AFTER)
        await service.exited_within(CRASH_WAIT_S if got_updates else EXIT_WAIT_S)
        nursery.cancel_scope.cancel()
    if not service.alive():
        pytest.fail(
            f"the service exited with code {service.exit_code()} "
            f"(answer {outcome.status}, {outcome.ended}):\n{service.stderr_tail(12)}",
            pytrace=False,
        )
    assert got_updates, bystander.failures
    assert not bystander.failures, bystander.failures
    assert await HealthProbe(service.http_url).check()


async def _updates(bystander: Bystander, count: int) -> bool:
    """Wait until the bystander has ``count`` updates: False if it fails or times out first."""
    with contextlib.suppress(trio.TooSlowError):
        await eventually(
            lambda: len(bystander.seqs) >= count or bool(bystander.failures), UPDATES_TIMEOUT_S
        )
    return len(bystander.seqs) >= count and not bystander.failures


async def test_ping_id_nested_300_arrays_keeps_process_up(service: ServiceUnderTest) -> None:
    """orjson decodes 1024 levels but encodes 254 at most: the pong echoing the id could not
    be encoded (``TypeError: Recursion limit reached``). Fuzz: generate_case(20260101, 9), a
    ping whose id nests arrays and objects 462 deep."""
    ping = b'{"type":"ping","id":' + b"[" * 300 + b"]" * 300 + b"}"
    await assert_survives(service, *after_handshake(text_frame(ping)))


async def test_handshake_non_ascii_connection_header_keeps_process_up(
    service: ServiceUnderTest,
) -> None:
    """wsproto splits Connection as ASCII (``UnicodeDecodeError``).
    Fuzz: generate_case(20260101, 11), ``Connection: up\\x96\\xf6grade``."""
    await assert_survives(service, Send(handshake_with(b"Connection: Upgrade\xff")))


async def test_handshake_non_ascii_extensions_header_keeps_process_up(
    service: ServiceUnderTest,
) -> None:
    """wsproto splits Sec-WebSocket-Extensions as ASCII (``UnicodeDecodeError``).
    Fuzz: generate_case(20260101, 187), ``Sec-WebSocket-Extensions: x\\xea\\xd9``."""
    await assert_survives(service, Send(handshake_with(b"Sec-WebSocket-Extensions: \xe9")))


async def test_handshake_non_ascii_protocol_header_keeps_process_up(
    service: ServiceUnderTest,
) -> None:
    """wsproto splits Sec-WebSocket-Protocol as ASCII (``UnicodeDecodeError``).
    Fuzz: generate_case(20260101, 6), ``Sec-WebSocket-Protocol: chat, super\\x8echat``."""
    await assert_survives(service, Send(handshake_with(b"Sec-WebSocket-Protocol: \xe9")))


async def test_handshake_punycode_host_keeps_process_up(service: ServiceUnderTest) -> None:
    """wsproto decodes Host with the ``idna`` codec: ``xn--zz`` is not valid punycode
    (``UnicodeError``). Fuzz: generate_case(20260101, 109), ``Host: xn--a90``; also
    ``xn--9-`` (does not round-trip), case 798."""
    await assert_survives(service, Send(handshake_with(b"Host: xn--zz")))


async def test_handshake_non_ascii_host_keeps_process_up(service: ServiceUnderTest) -> None:
    """The ``idna`` codec refuses non-ASCII bytes (``UnicodeDecodeError``).
    Fuzz: generate_case(20260101, 2), ``Host: \\x9f\\xba\\xd8\\x83\\xa4\\xb1``."""
    await assert_survives(service, Send(handshake_with(b"Host: \xe9t\xe9")))


async def test_http_request_cut_short_by_eof_keeps_process_up(service: ServiceUnderTest) -> None:
    """Found by the fuzzer, not in the known list. On the HTTP port, a request whose body is
    cut short by an EOF (``Content-Length: 5``, 2 bytes, half-close), or has a bad chunk
    header, makes h11 raise while the app's response is being closed; hypercorn 0.18 then
    sends its 400 while its close is sending the EOF (``trio.BusyResourceError: another task
    is currently sending data on this SocketStream``), which escapes hypercorn's connection
    handler and ends the process with code 1. A race: about one connection in ten alone,
    nearly always with 20 at once. Fuzz: generate_case(20260101, 103), ``PUT /health`` with
    ``Content-Length: 5``, 3 bytes and a half-close; also generate_case(20260101, 68), a
    chunked body ``3\\r\\nabc`` then EOF."""
    await assert_survives(
        service,
        Send(b"GET /health HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nab"),
        port="http",
        copies=RACE_COPIES,
        rounds=RACE_ROUNDS,
    )
