"""``quote_string``: the tenant as an InfluxQL string literal, read back as exactly itself.

Only a verified token's ``tenant`` claim (``^[A-Za-z0-9_.-]{1,64}$``) ever reaches it, but the
quoting must be right for any string: checked for every string Hypothesis makes against a
decoder written from influxql's scanner (``ScanString``: a literal ends at the first unescaped
quote; ``\\n``, ``\\\\``, ``\\'`` and ``\\"`` are the only escapes; a raw newline is an error),
and against a real influxd, which must select a tag value full of quotes and backslashes
through it, and nothing else.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from broadcaster.errors import QueryRejected
from broadcaster.sources.influxql import InfluxQLSource, quote_string
from tests.influxd import Influxd

_ESCAPES = {"n": "\n", "\\": "\\", "'": "'", '"': '"'}


def scan_string(text: str) -> tuple[str, int]:
    """Read the single-quoted literal at the start of ``text`` as influxql's scanner does.

    Returns:
        The value and the index just past the closing quote.

    Raises:
        ValueError: an unterminated literal, a raw newline or an unknown escape.
    """
    if not text.startswith("'"):
        raise ValueError("not a string literal")
    value: list[str] = []
    index = 1
    while index < len(text):
        char = text[index]
        if char == "'":
            return "".join(value), index + 1
        if char == "\n":
            raise ValueError("bad string: raw newline")
        if char == "\\":
            escaped = text[index + 1 : index + 2]
            if escaped not in _ESCAPES:
                raise ValueError(f"bad escape: \\{escaped}")
            value.append(_ESCAPES[escaped])
            index += 2
            continue
        value.append(char)
        index += 1
    raise ValueError("unterminated string")


@given(st.text())
def test_any_string_reads_back_as_itself_and_ends_where_it_should(value: str) -> None:
    literal = quote_string(value)
    # Whatever follows the literal stays outside it: nothing in a value can extend a query.
    assert scan_string(literal + " OR tenant = 'other'") == (value, len(literal))


@pytest.mark.parametrize(
    ("value", "literal"),
    [
        ("acme", "'acme'"),
        ("o'brien", "'o\\'brien'"),
        ("back\\slash", "'back\\\\slash'"),
        ("two\nlines", "'two\\nlines'"),
        ('say "hi"', "'say \"hi\"'"),
        ("\\'", "'\\\\\\''"),
        ("", "''"),
    ],
)
def test_examples(value: str, literal: str) -> None:
    assert quote_string(value) == literal


@pytest.fixture
async def source(influxd: Influxd, influx_db: str) -> AsyncIterator[InfluxQLSource]:
    async with httpx.AsyncClient(timeout=10.0) as client:
        yield InfluxQLSource(client, influxd.url, influx_db)


async def test_influxd_selects_a_tag_value_with_quotes_and_backslashes_through_it(
    influxd: Influxd, influx_db: str, source: InfluxQLSource
) -> None:
    tricky = "o'brien\\x\"y"  # a quote, a backslash, a double quote
    # Line protocol takes a tag value's quotes and backslashes (before other characters) as is.
    influxd.write(
        influx_db,
        f"sales,tenant={tricky} v=1 1000000000\n"
        "sales,tenant=acme v=2 1000000000\n"
        "sales,tenant=o v=3 1000000000\n",
    )

    async def values_for(tenant: str) -> list[object]:
        [result] = await source.query(f"SELECT v FROM sales WHERE tenant = {quote_string(tenant)}")
        return [row["v"] for series in result.series for row in series.rows()]

    assert await values_for(tricky) == [1]
    assert await values_for("acme") == [2]
    # Injection attempts are one odd tenant name each, matching no row.
    assert await values_for("acme' OR tenant = 'o") == []
    assert await values_for("x' OR 1=1 --") == []
    assert await values_for("two\nlines") == []  # escaped: a valid query
    with pytest.raises(QueryRejected):  # the same newline unescaped is a parse error
        await source.query("SELECT v FROM sales WHERE tenant = 'two\nlines'")
