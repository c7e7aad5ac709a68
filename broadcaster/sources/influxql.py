"""InfluxQL over HTTP ``/query``: InfluxDB 1.x, 2.x (v1-compatible API) and 3.x.

Uses httpx's async client, which runs on Trio through anyio, so no thread is needed.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from broadcaster.errors import QueryRejected, SourceResponseError, SourceUnavailable
from broadcaster.sources.base import Series, StatementResult
from broadcaster.sources.influx_auth import influx_auth

MAX_ERROR_CHARS = 300
# A bad query, not a database in trouble; auth failures (401/403) count as unavailable.
REJECTED_QUERY_STATUSES = frozenset({400, 404, 413})


class InfluxQLSource:
    """A :class:`~broadcaster.sources.base.MetricsSource` speaking InfluxQL over HTTP.

    Auth as :func:`~broadcaster.sources.influx_auth.influx_auth` says. Timestamps come back
    as epoch milliseconds.
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        base_url: str,
        database: str,
        *,
        token: str | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self._client = client
        self._base_url = base_url.rstrip("/")
        self._database = database
        auth_headers, self._auth = influx_auth(token, username, password)
        self._headers = {"Accept": "application/json", **auth_headers}

    async def query(self, statements: str) -> list[StatementResult]:
        params = {"db": self._database, "q": statements, "epoch": "ms"}
        body = await self._get("/query", params)
        try:
            return parse_query_response(body)
        except SourceResponseError as exc:
            if "not executed" in str(exc):
                # influxd 1.x says only this when a multi-statement request names no database.
                raise QueryRejected(
                    f"{exc} (does the database {self._database!r} exist?)"
                ) from None
            raise

    async def ping(self) -> None:
        await self._get("/ping", None)

    async def _get(self, path: str, params: dict[str, str] | None) -> bytes:
        url = self._base_url + path
        try:
            response = await self._client.get(
                url,
                params=params,
                headers=self._headers,
                auth=self._auth or httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.TimeoutException as exc:
            raise SourceUnavailable(
                f"InfluxDB at {self._base_url} timed out ({type(exc).__name__})"
            ) from exc
        except httpx.TransportError as exc:
            raise SourceUnavailable(f"InfluxDB at {self._base_url} unreachable: {exc}") from exc
        status = response.status_code
        if status >= 400:
            detail = response.text[:MAX_ERROR_CHARS].strip()
            if status in REJECTED_QUERY_STATUSES:
                raise QueryRejected(f"InfluxDB rejected the query (HTTP {status}): {detail}")
            raise SourceUnavailable(f"InfluxDB answered HTTP {status}: {detail}")
        return response.content


# InfluxQL's own quoting (influxql.QuoteString): inside '...', a newline, a backslash and a
# single quote are the only characters its scanner does not take as they are.
_STRING_ESCAPES = str.maketrans({"\n": "\\n", "\\": "\\\\", "'": "\\'"})


def quote_string(value: str) -> str:
    """``value`` as an InfluxQL string literal: ``o'k`` becomes ``'o\\'k'``.

    The scanner reads it back as exactly ``value``, whatever it holds (tested against a
    decoder written from the scanner's rules, and against influxd).
    """
    return "'" + value.translate(_STRING_ESCAPES) + "'"


def parse_query_response(body: bytes) -> list[StatementResult]:
    """Parse the JSON of a ``/query`` answer.

    Raises:
        SourceResponseError: not JSON, not the expected shape, or a statement failed.
    """
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise SourceResponseError(f"InfluxDB answer is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise SourceResponseError("InfluxDB answer is not a JSON object")
    if "error" in document:
        raise QueryRejected(f"InfluxDB error: {str(document['error'])[:MAX_ERROR_CHARS]}")
    results = document.get("results")
    if not isinstance(results, list):
        raise SourceResponseError("InfluxDB answer has no 'results' list")
    return [_statement(result) for result in results]


def _statement(result: Any) -> StatementResult:
    if not isinstance(result, dict):
        raise SourceResponseError("InfluxDB result is not an object")
    if "error" in result:
        raise QueryRejected(f"InfluxDB statement error: {str(result['error'])[:MAX_ERROR_CHARS]}")
    raw_series = result.get("series", [])
    if not isinstance(raw_series, list):
        raise SourceResponseError("InfluxDB 'series' is not a list")
    return StatementResult(tuple(_series(item) for item in raw_series))


def _series(item: Any) -> Series:
    if not isinstance(item, dict):
        raise SourceResponseError("InfluxDB series is not an object")
    columns = item.get("columns")
    values = item.get("values", [])
    tags = item.get("tags") or {}
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise SourceResponseError("InfluxDB series has no valid 'columns'")
    if not isinstance(values, list) or not all(isinstance(row, list) for row in values):
        raise SourceResponseError("InfluxDB series has no valid 'values'")
    if not isinstance(tags, dict):
        raise SourceResponseError("InfluxDB series 'tags' is not an object")
    return Series(
        name=str(item.get("name", "")),
        columns=tuple(columns),
        values=tuple(tuple(row) for row in values),
        tags={str(k): str(v) for k, v in tags.items()},
    )
