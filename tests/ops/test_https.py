"""The HTTP side over TLS: the API over https with a certificate made per run (trustme), and
hypercorn's connections still contained when the bytes arrive through TLS.

The service runs on an in-process source: this is the HTTP side; nothing is queried.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import trio
from hypercorn.trio.tcp_server import TCPServer
from structlog.testing import capture_logs

from broadcaster import service as service_module
from broadcaster.service import RunningService
from tests.services import StartService
from tests.tls_certs import TLSFiles, make_tls_files
from tests.wsclient import connect, next_message

CONCURRENT = 20  # the escape below was a race: nearly always hit with 20 at once in plain HTTP


@pytest.fixture
def tls(tmp_path: Path) -> TLSFiles:
    return make_tls_files(tmp_path)


@pytest.fixture
async def service(start_service: StartService, tls: TLSFiles) -> RunningService:
    return await start_service(**tls.flags())


async def test_the_api_is_served_over_https_and_links_to_wss(
    service: RunningService, tls: TLSFiles
) -> None:
    assert service.http_url.startswith("https://")
    async with httpx.AsyncClient(verify=tls.client_context, timeout=10) as client:
        config = (await client.get(f"{service.http_url}/api/client-config")).json()
        assert config["websocketUrl"] == service.websocket.url
        assert config["websocketUrl"].startswith("wss://")
        async with connect(service.websocket.url, ssl_context=tls.client_context) as ws:
            await next_message(ws)  # welcome
            health = await client.get(f"{service.http_url}/health")
            status = await client.get(f"{service.http_url}/api/websocket/status")
    assert health.status_code == 200
    assert status.status_code == 200
    assert status.json()["summary"]["activeConnections"] == 1


async def test_plain_http_to_the_https_port_gets_no_answer(service: RunningService) -> None:
    port = int(service.http_url.rsplit(":", 1)[1])
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = b""
        try:
            while data := await stream.receive_some(4096):
                answer += data
        except trio.BrokenResourceError:  # reset: also an end
            pass
        await stream.aclose()
    assert b"HTTP/1.1" not in answer


async def test_a_tls_handshake_that_never_finishes_is_cut_at_the_handshake_timeout(
    start_service: StartService, tls: TLSFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The WebSocket server's handshake timeout (shortened here), not hypercorn's 60 s."""
    monkeypatch.setattr(service_module, "HANDSHAKE_TIMEOUT_S", 0.5)
    service = await start_service(**tls.flags())
    port = int(service.http_url.rsplit(":", 1)[1])
    with trio.fail_after(5):
        silent = await trio.open_tcp_stream("127.0.0.1", port)
        await silent.send_all(b"\x16\x03\x01")  # the start of a ClientHello, and no more
        assert await silent.receive_some(4096) == b""
        await silent.aclose()


async def test_requests_cut_short_over_tls_leave_the_server_up(
    service: RunningService, tls: TLSFiles
) -> None:
    """tests/test_regressions.py's request cut short by an EOF (a body shorter than its
    Content-Length, then a half-close), sent through TLS by many clients at once: hypercorn's
    connection handler is contained there too, and the server goes on."""
    port = int(service.http_url.rsplit(":", 1)[1])

    async def cut_short() -> None:
        tcp = await trio.open_tcp_stream("127.0.0.1", port)
        tls_stream = trio.SSLStream(tcp, tls.client_context, server_hostname="127.0.0.1")
        try:
            await tls_stream.send_all(
                b"PUT /health HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nab"
            )
            await tcp.send_eof()  # a TCP half-close under TLS: a ragged EOF
            while await tls_stream.receive_some(4096):
                pass
        except trio.BrokenResourceError:
            pass
        finally:
            await trio.aclose_forcefully(tls_stream)

    with trio.fail_after(30):
        for _ in range(3):
            async with trio.open_nursery() as nursery:
                for _ in range(CONCURRENT):
                    nursery.start_soon(cut_short)
    async with httpx.AsyncClient(verify=tls.client_context, timeout=10) as client:
        assert (await client.get(f"{service.http_url}/health")).status_code == 200
    assert service.hub.containment.counts()["http"] == 0  # nothing escaped, nothing failed


async def test_a_failure_while_serving_a_tls_connection_ends_that_connection_only(
    service: RunningService, tls: TLSFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    """hypercorn wraps TLS connections in ``trio.SSLStream``: the boundary is still around
    each one, and names the client's address. The failure is injected (no client can cause
    one through TLS today): hypercorn's reading raises for the next connection."""

    async def fail(self: TCPServer) -> None:
        raise RuntimeError("injected")

    async with httpx.AsyncClient(verify=tls.client_context, timeout=10) as client:
        monkeypatch.setattr(TCPServer, "_read_data", fail)
        with capture_logs() as logs, pytest.raises(httpx.TransportError):
            await client.get(f"{service.http_url}/health")
        monkeypatch.undo()
        assert (await client.get(f"{service.http_url}/health")).status_code == 200
    (failed,) = [entry for entry in logs if entry["event"] == "connection failed"]
    assert failed["stage"] == "http"
    assert failed["ip"] == "127.0.0.1"
    assert service.hub.containment.counts()["http"] == 1
