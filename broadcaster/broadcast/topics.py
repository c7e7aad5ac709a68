"""Topics: a name, one InfluxQL request, and how its results become a message's ``data``.

Built-in topics describe our PoP metrics (see :mod:`broadcaster.broadcast.pop_topics`). More can be
defined in a TOML file so that any InfluxDB data can be served::

    [[topic]]
    name = "cpu"                     # letters, digits, '_', '-', '.', ':'
    description = "CPU per host"     # optional
    query = "SELECT mean(usage) FROM cpu WHERE time > now() - 1m GROUP BY host"

A file topic's ``data`` is ``{"series": [{"name", "tags", "rows": [{column: value}]}]}``.
A file topic with a built-in's name replaces the built-in.

A query holding ``{tenant}`` makes a **tenant topic**: each tenant gets its own value, queried
with the placeholder replaced by the tenant as an InfluxQL string literal::

    query = "SELECT last(v) FROM sales WHERE \"tenant\" = {tenant}"   # -> = 'acme'

Only the ``tenant`` claim of a verified token fills it; nothing a client sends does.

A **window topic** keeps the last ``window`` of a ``GROUP BY time(resolution)`` query in
memory and sends each tick only what changed (:mod:`broadcaster.broadcast.window`)::

    [[topic]]
    name = "cpu-history"
    kind = "window"
    window = "1h"                    # an integer and one of s, m, h, d
    resolution = "10s"               # must divide the window; the query groups by it
    query = "SELECT mean(usage) FROM cpu WHERE $timeFilter GROUP BY time(10s), host fill(none)"

The service fills ``$timeFilter`` with the range it reads (``time >= <ms>ms AND time <
<ms>ms``); a window query is one statement. ``{tenant}`` works as above (one window per
tenant).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broadcaster.broadcast.window import TIME_FILTER, WindowSpec, group_by_time_ms, time_filter
from broadcaster.errors import ConfigError, TopicsFileError
from broadcaster.protocol import MAX_TOPIC_NAME_CHARS
from broadcaster.sources.base import StatementResult
from broadcaster.sources.influxql import quote_string

# Clients can subscribe only to names the protocol accepts: at most MAX_TOPIC_NAME_CHARS.
TOPIC_NAME = re.compile(rf"^[A-Za-z0-9][A-Za-z0-9_.:-]{{0,{MAX_TOPIC_NAME_CHARS - 1}}}$")
TOPIC_KEYS = frozenset({"name", "description", "query"})
WINDOW_KEYS = frozenset({"kind", "window", "resolution"})
TENANT_PLACEHOLDER = "{tenant}"

Shaper = Callable[[Sequence[StatementResult]], Any]


@dataclass(frozen=True, slots=True)
class Topic:
    """What the broadcast loop needs to produce one topic's value."""

    name: str
    query: str
    shape: Shaper  # unused by a window topic: its answers are merged into its window
    description: str = ""
    window: WindowSpec | None = None  # a window topic's window and resolution

    @property
    def is_tenant_topic(self) -> bool:
        """Whether each tenant has its own value (the query names ``{tenant}``)."""
        return TENANT_PLACEHOLDER in self.query

    def query_for(self, tenant: str | None, time_range: tuple[int, int] | None = None) -> str:
        """The query to run for ``tenant`` (None: a topic for everyone); a window topic's
        ``$timeFilter`` becomes ``time_range`` (start, end in Unix ms).

        Raises:
            ValueError: a tenant topic without a tenant, or a tenant for a topic without one
                (the hub never subscribes either; this keeps a bug from querying everyone's
                rows).
        """
        query = self.query
        if (time_range is None) != (self.window is None):
            raise ValueError(f"topic {self.name!r}: a time range is for window topics only")
        if time_range is not None:  # first: a tenant's literal may hold the placeholder
            query = query.replace(TIME_FILTER, time_filter(*time_range))
        if tenant is None:
            if self.is_tenant_topic:
                raise ValueError(f"topic {self.name!r} needs a tenant")
            return query
        if not self.is_tenant_topic:
            raise ValueError(f"topic {self.name!r} is not a tenant topic")
        return query.replace(TENANT_PLACEHOLDER, quote_string(tenant))


def series_data(results: Sequence[StatementResult]) -> dict[str, Any]:
    """The generic ``data`` of a file topic: every series of every statement, as rows."""
    return {
        "series": [
            {"name": series.name, "tags": series.tags, "rows": series.rows()}
            for result in results
            for series in result.series
        ]
    }


def load_topics_file(path: Path) -> list[Topic]:
    """Read topics from a TOML file.

    Raises:
        TopicsFileError: the file cannot be read, is not TOML, or a topic is invalid.
    """
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TopicsFileError(str(path), f"cannot read it: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise TopicsFileError(str(path), f"not valid TOML: {exc}") from None
    unknown = set(document) - {"topic"}
    if unknown:
        raise TopicsFileError(str(path), f"unknown top-level keys {sorted(unknown)}; use [[topic]]")
    entries = document.get("topic", [])
    if not isinstance(entries, list) or not entries:
        raise TopicsFileError(str(path), "no [[topic]] tables found")
    topics: list[Topic] = []
    for index, entry in enumerate(entries, start=1):
        topics.append(_topic_from_toml(str(path), index, entry))
    names = [topic.name for topic in topics]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise TopicsFileError(str(path), f"topic names defined twice: {duplicates}")
    return topics


def _topic_from_toml(path: str, index: int, entry: Mapping[str, Any]) -> Topic:
    where = f"topic #{index}"
    unknown = set(entry) - TOPIC_KEYS - WINDOW_KEYS
    if unknown:
        raise TopicsFileError(path, f"{where}: unknown keys {sorted(unknown)}")
    name = entry.get("name")
    if not isinstance(name, str) or not TOPIC_NAME.match(name):
        raise TopicsFileError(
            path, f"{where}: 'name' must match {TOPIC_NAME.pattern}, got {name!r}"
        )
    query = entry.get("query")
    if not isinstance(query, str) or not query.strip():
        raise TopicsFileError(path, f"{where} ({name}): 'query' must be a non-empty string")
    description = entry.get("description", "")
    if not isinstance(description, str):
        raise TopicsFileError(path, f"{where} ({name}): 'description' must be a string")
    window = _window_of(path, f"{where} ({name})", entry, query)
    return Topic(
        name=name, query=query.strip(), shape=series_data, description=description, window=window
    )


def _window_of(path: str, where: str, entry: Mapping[str, Any], query: str) -> WindowSpec | None:
    """The window of a ``kind = "window"`` topic, checked with its query; None for others."""
    kind = entry.get("kind")
    if kind is None:
        for key in ("window", "resolution"):
            if key in entry:
                raise TopicsFileError(path, f'{where}: {key!r} needs kind = "window"')
        if TIME_FILTER in query:
            raise TopicsFileError(path, f'{where}: {TIME_FILTER} needs kind = "window"')
        return None
    if kind != "window":
        raise TopicsFileError(path, f"{where}: 'kind' must be \"window\", got {kind!r}")
    window, resolution = entry.get("window"), entry.get("resolution")
    if not isinstance(window, str) or not isinstance(resolution, str):
        raise TopicsFileError(
            path, f"{where}: a window topic needs 'window' and 'resolution' strings such as '1h'"
        )
    try:
        spec = WindowSpec.parse(window, resolution)
    except ValueError as exc:
        raise TopicsFileError(path, f"{where}: {exc}") from None
    if TIME_FILTER not in query:
        raise TopicsFileError(path, f"{where}: a window query needs {TIME_FILTER} in its WHERE")
    if ";" in query.strip().rstrip(";"):
        raise TopicsFileError(path, f"{where}: a window query is one statement (no ';')")
    if group_by_time_ms(query) != spec.resolution_ms:
        raise TopicsFileError(
            path, f"{where}: a window query must GROUP BY time({resolution}), its resolution"
        )
    return spec


def build_catalog(
    builtin: Sequence[Topic], topics_file: Path | None, default_topics: Sequence[str] = ()
) -> dict[str, Topic]:
    """Built-in topics, then the file's (replacing a built-in of the same name).

    Raises:
        TopicsFileError: the topics file is invalid.
        ConfigError: a default topic is not in the catalog.
    """
    catalog = {topic.name: topic for topic in builtin}
    if topics_file is not None:
        catalog.update((topic.name, topic) for topic in load_topics_file(topics_file))
    unknown = [name for name in default_topics if name not in catalog]
    if unknown:
        raise ConfigError("--default-topics", ",".join(default_topics), f"unknown topics {unknown}")
    return catalog
