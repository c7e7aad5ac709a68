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
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broadcaster.errors import ConfigError, TopicsFileError
from broadcaster.protocol import MAX_TOPIC_NAME_CHARS
from broadcaster.sources.base import StatementResult
from broadcaster.sources.influxql import quote_string

# Clients can subscribe only to names the protocol accepts: at most MAX_TOPIC_NAME_CHARS.
TOPIC_NAME = re.compile(rf"^[A-Za-z0-9][A-Za-z0-9_.:-]{{0,{MAX_TOPIC_NAME_CHARS - 1}}}$")
TOPIC_KEYS = frozenset({"name", "description", "query"})
TENANT_PLACEHOLDER = "{tenant}"

Shaper = Callable[[Sequence[StatementResult]], Any]


@dataclass(frozen=True, slots=True)
class Topic:
    """What the broadcast loop needs to produce one topic's value."""

    name: str
    query: str
    shape: Shaper
    description: str = ""

    @property
    def is_tenant_topic(self) -> bool:
        """Whether each tenant has its own value (the query names ``{tenant}``)."""
        return TENANT_PLACEHOLDER in self.query

    def query_for(self, tenant: str | None) -> str:
        """The query to run for ``tenant`` (None: a topic for everyone).

        Raises:
            ValueError: a tenant topic without a tenant, or a tenant for a topic without one
                (the hub never subscribes either; this keeps a bug from querying everyone's
                rows).
        """
        if tenant is None:
            if self.is_tenant_topic:
                raise ValueError(f"topic {self.name!r} needs a tenant")
            return self.query
        if not self.is_tenant_topic:
            raise ValueError(f"topic {self.name!r} is not a tenant topic")
        return self.query.replace(TENANT_PLACEHOLDER, quote_string(tenant))


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
    unknown = set(entry) - TOPIC_KEYS
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
    return Topic(name=name, query=query.strip(), shape=series_data, description=description)


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
