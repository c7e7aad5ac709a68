"""WebSocket over TLS (``--tls-cert-file``/``--tls-key-file``): real certificates made per run
(trustme), real TLS clients on loopback, the real service.

Values come from an in-process source: these tests are about the socket side, not the
database. The clients are trio-websocket over ``ssl`` (for readers) and a blocking
``ssl.SSLSocket`` client that reads only when told (for the peer that falls behind).
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
from functools import partial
from pathlib import Path

import httpx
import orjson
import pytest
import trio
from trio_websocket import ConnectionClosed

from broadcaster.errors import ConfigError
from broadcaster.service import RunningService
from broadcaster.ws import server
from broadcaster.ws.tls import server_context
from tests.services import PaddedSource, StartService, write_topics_file
from tests.tls_certs import UPGRADE_REQUEST, TLSFiles, make_tls_files, read_frame, tls_upgrade
from tests.wsclient import JSON, connect, eventually, next_message

TEXT = 0x1
CLOSE = 0x8


@pytest.fixture
def tls(tmp_path: Path) -> TLSFiles:
    return make_tls_files(tmp_path)


async def start_feed(
    start_service: StartService, tls: TLSFiles, tmp_path: Path, pad_bytes: int, **overrides: object
) -> RunningService:
    """The service over TLS with one default topic ``feed``: an update of ``pad_bytes`` of
    padding ten times a second."""
    return await start_service(
        source=PaddedSource(pad_bytes=pad_bytes),
        topics_file=write_topics_file(tmp_path, feed="SELECT feed"),
        default_topics="feed",
        broadcast_interval_ms=100,
        **tls.flags(),
        **overrides,
    )


async def get_status(service: RunningService, tls: TLSFiles) -> JSON:
    """``/api/websocket/status`` over https."""
    async with httpx.AsyncClient(verify=tls.client_context, timeout=10) as client:
        response = await client.get(f"{service.http_url}/api/websocket/status")
    status: JSON = response.json()
    return status


async def test_welcome_and_updates_over_wss(
    start_service: StartService, tls: TLSFiles, tmp_path: Path
) -> None:
    service = await start_feed(start_service, tls, tmp_path, pad_bytes=10)
    assert service.websocket.url.startswith("wss://")
    async with connect(service.websocket.url, ssl_context=tls.client_context) as ws:
        assert (await next_message(ws))["type"] == "welcome"
        seqs = [(await next_message(ws))["seq"] for _ in range(5)]
        await ws.send_message('{"type": "ping", "id": 7}')
        while (message := await next_message(ws))["type"] != "pong":
            assert message["type"] == "metrics_update"
        assert message["id"] == 7
    assert seqs == list(range(seqs[0], seqs[0] + 5))


async def test_a_big_update_is_written_in_parts_and_a_newer_one_replaces_an_unsent_one(
    start_service: StartService, tls: TLSFiles, tmp_path: Path
) -> None:
    """A peer that stops reading: the kernel takes part of a 300 KB update (its records stay
    queued as ciphertext), newer updates replace the unsent one (latest wins); once the
    peer reads again, every frame arrives whole and in order, the replaced ones skipped."""
    service = await start_feed(
        start_service, tls, tmp_path, pad_bytes=300_000, send_stall_timeout_ms=60_000
    )
    behind = await trio.to_thread.run_sync(
        partial(tls_upgrade, service.websocket.port, tls.client_context, receive_buffer_bytes=4096)
    )
    try:
        await eventually(lambda: service.hub.counters.replaced_updates >= 3, timeout_s=20)
        status = await get_status(service, tls)
        (connection,) = status["connections"]
        assert connection["pendingBytes"] > 0
        frames = [await trio.to_thread.run_sync(read_frame, behind) for _ in range(8)]
    finally:
        behind.close()
    messages = [orjson.loads(payload) for opcode, payload in frames if opcode == TEXT]
    updates = [message for message in messages if message["type"] == "metrics_update"]
    assert messages[0]["type"] == "welcome"
    assert all(len(orjson.dumps(update)) > 300_000 for update in updates)
    seqs = [update["seq"] for update in updates]
    assert seqs == sorted(set(seqs))
    assert seqs[-1] - seqs[0] > len(seqs) - 1, "no update was replaced"


async def test_a_tls_peer_that_stops_reading_is_closed_and_others_miss_nothing(
    start_service: StartService, tls: TLSFiles, tmp_path: Path
) -> None:
    service = await start_feed(
        start_service, tls, tmp_path, pad_bytes=100_000, send_stall_timeout_ms=1000
    )
    received: dict[int, list[int]] = {}

    async def reader(number: int, task_status: trio.TaskStatus[None]) -> None:
        options = {"ssl_context": tls.client_context, "max_message_size": 1 << 24}
        async with connect(service.websocket.url, **options) as ws:
            await next_message(ws)  # welcome
            received[number] = []
            task_status.started()
            while True:
                received[number].append((await next_message(ws))["seq"])

    async with trio.open_nursery() as nursery:
        for number in range(3):
            await nursery.start(reader, number)
        stopped = await trio.to_thread.run_sync(
            partial(
                tls_upgrade, service.websocket.port, tls.client_context, receive_buffer_bytes=4096
            )
        )
        try:
            await eventually(lambda: service.hub.counters.slow_consumers_closed == 1, 30)
            closed_at = {number: len(seqs) for number, seqs in received.items()}
            await eventually(
                lambda: min(len(s) - closed_at[n] for n, s in received.items()) >= 5, 30
            )
        finally:
            stopped.close()
        nursery.cancel_scope.cancel()
    for seqs in received.values():
        assert len(seqs) >= 10
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "a reader missed an update"


@pytest.mark.parametrize(
    "garbage",
    [
        b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\r\n",
        b"\x16\x03\x01\x00\x05hello",  # a TLS record header, then nonsense
        bytes(range(256)) * 4,
    ],
    ids=["plain HTTP", "broken ClientHello", "binary noise"],
)
async def test_a_client_that_does_not_speak_tls_only_ends_its_connection(
    start_service: StartService, tls: TLSFiles, tmp_path: Path, garbage: bytes
) -> None:
    service = await start_feed(start_service, tls, tmp_path, pad_bytes=10)
    async with connect(service.websocket.url, ssl_context=tls.client_context) as ws:
        await next_message(ws)  # welcome
        with trio.fail_after(10):
            raw = await trio.open_tcp_stream("127.0.0.1", service.websocket.port)
            await raw.send_all(garbage)
            while await raw.receive_some(4096):  # perhaps an alert, then the end
                pass
            await raw.aclose()
        assert (await next_message(ws))["type"] == "metrics_update"
    assert service.hub.containment.counts() == dict.fromkeys(service.hub.containment.counts(), 0)
    assert service.hub.tracked_count() <= 1


async def test_a_client_that_never_finishes_its_tls_handshake_is_cut_at_the_timeout(
    start_service: StartService, tls: TLSFiles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The TLS handshake counts against the WebSocket handshake's timeout (shortened here)."""
    monkeypatch.setattr(server, "HANDSHAKE_TIMEOUT_S", 0.5)
    service = await start_feed(start_service, tls, tmp_path, pad_bytes=10)
    with trio.fail_after(5):
        silent = await trio.open_tcp_stream("127.0.0.1", service.websocket.port)
        await silent.send_all(b"\x16\x03\x01")  # the start of a ClientHello, and no more
        assert await silent.receive_some(4096) == b""
        await silent.aclose()
    assert service.hub.containment.counts() == dict.fromkeys(service.hub.containment.counts(), 0)


def ask_over_tls(port: int, context: ssl.SSLContext, request: bytes) -> bytes:
    """Send ``request`` over TLS and read the answer until the server ends it (blocking)."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as sock,
        context.wrap_socket(sock, server_hostname="127.0.0.1") as tls_socket,
    ):
        tls_socket.sendall(request)
        answer = b""
        while chunk := tls_socket.recv(4096):  # b"" at the server's close_notify
            answer += chunk
        return answer


async def test_a_refused_handshake_is_answered_over_tls(
    start_service: StartService, tls: TLSFiles, tmp_path: Path
) -> None:
    """The HTTP refusal is encrypted, then TLS's end of output (close_notify) follows it."""
    service = await start_feed(start_service, tls, tmp_path, pad_bytes=10)
    request = UPGRADE_REQUEST.replace(b"GET /ws ", b"GET /elsewhere ")
    answer = await trio.to_thread.run_sync(
        ask_over_tls, service.websocket.port, tls.client_context, request
    )
    assert answer.startswith(b"HTTP/1.1 404 ")
    assert b"WebSocket endpoint is /ws" in answer


async def test_a_client_over_capacity_is_closed_with_1013_over_tls(
    start_service: StartService, tls: TLSFiles, tmp_path: Path
) -> None:
    service = await start_feed(start_service, tls, tmp_path, pad_bytes=10, max_connections=1)
    async with connect(service.websocket.url, ssl_context=tls.client_context) as first:
        await next_message(first)
        async with connect(service.websocket.url, ssl_context=tls.client_context) as second:
            with trio.fail_after(10), pytest.raises(ConnectionClosed):
                await second.get_message()
        assert second.closed is not None
        assert second.closed.code == 1013


async def test_close_handshake_over_tls(
    start_service: StartService, tls: TLSFiles, tmp_path: Path
) -> None:
    service = await start_feed(start_service, tls, tmp_path, pad_bytes=10)
    async with connect(service.websocket.url, ssl_context=tls.client_context) as ws:
        await next_message(ws)
        with trio.fail_after(10):
            await ws.aclose(code=4321, reason="done")
        assert ws.closed is not None
        assert ws.closed.code == 4321  # the server's answer echoes the client's code
    await eventually(lambda: service.hub.tracked_count() == 0)


async def test_the_server_closes_with_a_close_frame_over_tls(
    start_service: StartService, tls: TLSFiles, tmp_path: Path
) -> None:
    """Too big a message: the server closes with 1009 through the encrypted outbound path."""
    service = await start_feed(start_service, tls, tmp_path, pad_bytes=10, max_message_bytes=1024)
    async with connect(service.websocket.url, ssl_context=tls.client_context) as ws:
        await next_message(ws)
        await ws.send_message("x" * 2000)
        with trio.fail_after(10):
            while True:
                try:
                    await ws.get_message()
                except ConnectionClosed:
                    break
        assert ws.closed is not None
        assert ws.closed.code == 1009


# --- the flags ---------------------------------------------------------------------------


def test_server_context_refuses_bad_files_naming_the_flag(tls: TLSFiles, tmp_path: Path) -> None:
    (tmp_path / "other").mkdir()
    other = make_tls_files(tmp_path / "other")
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello")
    cases = [
        (tmp_path / "missing.pem", tls.key_file, "--tls-cert-file", "cannot be read"),
        (not_pem, tls.key_file, "--tls-cert-file", "no PEM certificate"),
        (tls.cert_file, not_pem, "--tls-key-file", "no unencrypted PEM key"),
        (tls.cert_file, other.key_file, "--tls-key-file", "does not match"),
    ]
    for cert_file, key_file, flag, problem in cases:
        with pytest.raises(ConfigError) as raised:
            server_context(cert_file, key_file)
        assert raised.value.setting == flag
        assert problem in raised.value.problem
    context = server_context(tls.cert_file, tls.key_file)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2


@pytest.mark.parametrize("which", ["missing cert", "invalid key"])
def test_cli_exits_2_on_a_bad_tls_file(tls: TLSFiles, tmp_path: Path, which: str) -> None:
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello")
    cert, key = (tmp_path / "nope.pem", tls.key_file)
    if which == "invalid key":
        cert, key = tls.cert_file, not_pem
    with socket.socket() as probe:  # free ports, so a start that got too far would show
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "broadcaster", "serve", "--ws-port", str(port)]
    done = subprocess.run(
        [*command, "--http-port", "0", "--tls-cert-file", str(cert), "--tls-key-file", str(key)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    flag = "--tls-cert-file" if which == "missing cert" else "--tls-key-file"
    assert f"broadcaster: error: {flag}" in done.stderr
