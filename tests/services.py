"""Starting the service under test: the settings factory, the ``start_service`` fixtures' types
(the fixtures are in tests/conftest.py), an in-process source for big updates, topics files.

FakeSource and the in-memory hub are in tests/fakes.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import trio

from broadcaster.config import Settings, build_settings
from broadcaster.service import RunningService
from broadcaster.sources.base import MetricsSource, Series, StatementResult


def make_settings(**overrides: Any) -> Settings:
    """Settings for a service under test: both ports 0 (the servers report what they bound),
    quiet console logs; keyword arguments override any field, as strings or typed values.

    Built with :func:`build_settings`, the CLI's own path, so a bad override fails as it would
    there (a ``ConfigError`` naming the flag).
    """
    values: dict[str, Any] = {
        "ws_port": 0,
        "http_port": 0,
        "log_format": "console",
        "log_level": "warning",
    }
    values.update(overrides)
    return build_settings(values)


class StartService(Protocol):
    """The ``start_service`` fixture: runs ``serve()`` in the test's nursery on an in-process
    source (a ``FakeSource`` unless ``source`` is given) and returns its handles once it
    listens; keyword arguments override :func:`make_settings`."""

    async def __call__(
        self, *, source: MetricsSource | None = None, **overrides: Any
    ) -> RunningService: ...


class StartServiceOnInfluxd(Protocol):
    """The ``start_service_on_influxd`` fixture: as :class:`StartService`, against the session's
    real influxd and the test's fresh database (``influx_url``/``influx_db`` are preset)."""

    async def __call__(self, **overrides: Any) -> RunningService: ...


def write_topics_file(directory: Path, **queries: str) -> str:
    """A topics file in ``directory`` with one topic per keyword (name = query); its path."""
    path = directory / "topics.toml"
    entries = (
        f'[[topic]]\nname = "{name}"\nquery = "{query}"\n' for name, query in queries.items()
    )
    path.write_text("".join(entries))
    return str(path)


# A window topic over measurement ``m``: the last minute at 1 s resolution.
HISTORY_TOPIC = """
[[topic]]
name = "history"
kind = "window"
window = "1m"
resolution = "1s"
query = "SELECT n FROM m WHERE $timeFilter GROUP BY time(1s)"
"""


class PaddedSource:
    """Answers every query at once with a counter and ``pad_bytes`` of padding: updates as big
    as a test needs to fill a socket's buffers, without a database."""

    def __init__(self, pad_bytes: int) -> None:
        self.pad = "x" * pad_bytes
        self.queries = 0

    async def query(self, statements: str) -> list[StatementResult]:
        await trio.lowlevel.checkpoint()
        self.queries += 1
        series = Series(name="feed", columns=("n", "pad"), values=((self.queries, self.pad),))
        return [StatementResult((series,))]

    async def ping(self) -> None:
        await trio.lowlevel.checkpoint()
