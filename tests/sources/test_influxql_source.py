"""The InfluxQL source against a real influxd, and against a canned HTTP server for answers
a real influxd cannot be made to give (garbage, stalls, a token check).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from functools import partial

import httpx
import pytest
import trio

from broadcaster.errors import QueryRejected, SourceResponseError, SourceUnavailable
from broadcaster.sources.influxql import InfluxQLSource
from tests.influxd import Influxd, free_port

Canned = Callable[[bytes], bytes | None]


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=1.0) as http_client:
        yield http_client


async def test_query_returns_series_of_every_statement(
    influxd: Influxd, influx_db: str, client: httpx.AsyncClient
) -> None:
    influxd.write(influx_db, "cpu,host=a v=1 1000000000\ncpu,host=b v=2 2000000000")
    source = InfluxQLSource(client, influxd.url, influx_db)
    first, second = await source.query("SELECT v FROM cpu GROUP BY host; SELECT count(v) FROM cpu")
    assert [s.tags for s in first.series] == [{"host": "a"}, {"host": "b"}]
    assert first.series[0].rows() == [{"time": 1000, "v": 1}]
    assert second.series[0].rows()[0]["count"] == 2
    await source.ping()


async def test_missing_database_and_bad_query_are_response_errors(
    influxd: Influxd, client: httpx.AsyncClient
) -> None:
    source = InfluxQLSource(client, influxd.url, "no_such_db")
    with pytest.raises(QueryRejected, match="database not found"):
        await source.query("SELECT * FROM cpu")
    with pytest.raises(QueryRejected, match="does the database 'no_such_db' exist"):
        await source.query("SELECT * FROM a; SELECT * FROM b")
    with pytest.raises(QueryRejected, match=r"HTTP 400.*error parsing query"):
        await source.query("SELEC nonsense")


async def test_database_down_is_unavailable(client: httpx.AsyncClient) -> None:
    source = InfluxQLSource(client, f"http://127.0.0.1:{free_port()}", "metrics")
    with pytest.raises(SourceUnavailable, match="unreachable"):
        await source.query("SELECT 1")
    with pytest.raises(SourceUnavailable):
        await source.ping()


async def serve_canned(answer: Canned, *, task_status: trio.TaskStatus[int]) -> None:
    """A one-route HTTP server: ``answer(request head)`` gives the raw response, or None to
    stall forever."""

    async def handle(stream: trio.SocketStream) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = await stream.receive_some(65536)
            if not chunk:
                return
            head += chunk
        response = answer(head)
        if response is None:
            await trio.sleep_forever()
        await stream.send_all(response)
        await stream.aclose()

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(handle, listeners)


def http_response(status: str, body: bytes) -> bytes:
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


@pytest.mark.parametrize(
    ("status", "body", "error", "match"),
    [
        ("200 OK", b"<html>proxy error</html>", SourceResponseError, "not JSON"),
        ("200 OK", b"[1, 2]", SourceResponseError, "not a JSON object"),
        ("200 OK", b'{"nothing": 1}', SourceResponseError, "no 'results'"),
        ("200 OK", b'{"results": [{"series": "x"}]}', SourceResponseError, "not a list"),
        ("200 OK", b'{"results": [{"series": [{"values": []}]}]}', SourceResponseError, "columns"),
        ("200 OK", b'{"results": [{"error": "boom"}]}', QueryRejected, "boom"),
        ("500 Internal Server Error", b'{"error": "oops"}', SourceUnavailable, "HTTP 500"),
        ("401 Unauthorized", b'{"error": "auth"}', SourceUnavailable, "HTTP 401"),
    ],
)
async def test_garbage_answers_raise_clear_errors(
    nursery: trio.Nursery,
    client: httpx.AsyncClient,
    status: str,
    body: bytes,
    error: type[Exception],
    match: str,
) -> None:
    port = await nursery.start(partial(serve_canned, lambda head: http_response(status, body)))
    source = InfluxQLSource(client, f"http://127.0.0.1:{port}", "metrics")
    with pytest.raises(error, match=match) as raised:
        await source.query("SELECT 1")
    # Garbage is not a rejected query: only the database's own refusal is.
    assert isinstance(raised.value, QueryRejected) == (error is QueryRejected)


async def test_stalled_database_times_out_as_unavailable(
    nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    port = await nursery.start(partial(serve_canned, lambda head: None))
    source = InfluxQLSource(client, f"http://127.0.0.1:{port}", "metrics")
    with pytest.raises(SourceUnavailable, match="timed out"):
        await source.query("SELECT 1")


async def test_token_and_basic_auth_are_sent(
    nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    heads: list[bytes] = []

    def record(head: bytes) -> bytes:
        heads.append(head)
        return http_response("200 OK", b'{"results": [{}]}')

    port = await nursery.start(partial(serve_canned, record))
    url = f"http://127.0.0.1:{port}"
    await InfluxQLSource(client, url, "metrics", token="s3cret").query("SELECT 1")
    await InfluxQLSource(client, url, "metrics", username="u", password="p").query("SELECT 1")
    assert b"\r\nAuthorization: Token s3cret\r\n" in heads[0]
    assert b"\r\nAuthorization: Basic dTpw\r\n" in heads[1]  # base64("u:p")
    assert b"epoch=ms" in heads[0]
