"""The topics file: what loads, and the one-line errors for what does not."""

from __future__ import annotations

from pathlib import Path

import pytest

from broadcaster.broadcast.pop_topics import BUILTIN_TOPICS
from broadcaster.broadcast.topics import Topic, build_catalog, load_topics_file, series_data
from broadcaster.broadcast.window import WindowSpec
from broadcaster.config import Settings
from broadcaster.errors import ConfigError, TopicsFileError
from broadcaster.sources.base import Series, StatementResult
from tests import REPO

EXAMPLE = REPO / "examples" / "topics.toml"


def test_the_shipped_example_loads() -> None:
    topics = load_topics_file(EXAMPLE)
    assert [t.name for t in topics] == [
        "pop-latest",
        "region-latency",
        "region-latency-30m",
        "loss-history",
    ]
    assert topics[-1].window is not None
    catalog = build_catalog(BUILTIN_TOPICS, EXAMPLE, ("overview", "pop-latest"))
    assert list(catalog) == [
        "overview",
        "regressions",
        "latency-history",
        *[t.name for t in topics],
    ]


def test_file_topic_replaces_builtin_of_the_same_name(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text('[[topic]]\nname = "overview"\nquery = "SELECT 1"\n')
    assert build_catalog(BUILTIN_TOPICS, path)["overview"].query == "SELECT 1"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("not = [toml", "not valid TOML"),
        ("", "no [[topic]] tables"),
        ('[other]\nx = 1\n[[topic]]\nname = "a"\nquery = "q"\n', "unknown top-level keys"),
        ('[[topic]]\nname = "a b"\nquery = "q"\n', "'name' must match"),
        ('[[topic]]\nname = "a"\n', "'query' must be a non-empty string"),
        ('[[topic]]\nname = "a"\nquery = "q"\ncolour = "red"\n', "unknown keys ['colour']"),
        ('[[topic]]\nname = "a"\nquery = "q"\n[[topic]]\nname = "a"\nquery = "r"\n', "twice"),
    ],
)
def test_invalid_files_name_the_problem(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "topics.toml"
    path.write_text(text)
    with pytest.raises(TopicsFileError, match="--topics-file") as raised:
        load_topics_file(path)
    assert problem in str(raised.value)


def test_missing_file_and_unknown_default_topic() -> None:
    with pytest.raises(TopicsFileError, match="cannot read it"):
        load_topics_file(Path("/no/such/topics.toml"))
    with pytest.raises(ConfigError, match=r"--default-topics.*unknown topics \['nope'\]"):
        build_catalog(BUILTIN_TOPICS, None, ("overview", "nope"))


def test_series_data_flattens_every_statement() -> None:
    first = StatementResult(
        (Series(name="cpu", columns=("time", "v"), values=((1, 2.5),), tags={"host": "a"}),)
    )
    second = StatementResult((Series(name="mem", columns=("time", "v"), values=((1, 7),)),))
    assert series_data([first, second]) == {
        "series": [
            {"name": "cpu", "tags": {"host": "a"}, "rows": [{"time": 1, "v": 2.5}]},
            {"name": "mem", "tags": {}, "rows": [{"time": 1, "v": 7}]},
        ]
    }


# --- tenant topics -----------------------------------------------------------------------------


def test_a_query_with_the_tenant_placeholder_makes_a_tenant_topic(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text(
        '[[topic]]\nname = "sales"\nquery = "SELECT last(v) FROM s WHERE \\"tenant\\" = {tenant}"\n'
        '[[topic]]\nname = "all"\nquery = "SELECT last(v) FROM s"\n'
    )
    sales, everyone = load_topics_file(path)
    assert sales.is_tenant_topic
    assert not everyone.is_tenant_topic
    assert sales.query_for("acme") == "SELECT last(v) FROM s WHERE \"tenant\" = 'acme'"
    assert everyone.query_for(None) == "SELECT last(v) FROM s"


def test_the_tenant_is_quoted_and_escaped_everywhere_it_appears() -> None:
    topic = Topic(
        name="t",
        query="SELECT * FROM a WHERE t = {tenant}; SELECT * FROM b WHERE t = {tenant}",
        shape=series_data,
    )
    assert topic.query_for("o'k\\") == (
        "SELECT * FROM a WHERE t = 'o\\'k\\\\'; SELECT * FROM b WHERE t = 'o\\'k\\\\'"
    )


def test_a_tenant_topic_is_never_queried_without_a_tenant_nor_the_reverse() -> None:
    tenant_topic = Topic(name="t", query="SELECT * FROM a WHERE t = {tenant}", shape=series_data)
    with pytest.raises(ValueError, match="needs a tenant"):
        tenant_topic.query_for(None)
    with pytest.raises(ValueError, match="not a tenant topic"):
        Topic(name="u", query="SELECT 1", shape=series_data).query_for("acme")


WINDOW_QUERY = "SELECT mean(v) FROM m WHERE $timeFilter GROUP BY time(10s), host fill(none)"


def window_entry(**fields: str) -> str:
    entry = {"name": "h", "kind": "window", "window": "1h", "resolution": "10s"}
    entry["query"] = WINDOW_QUERY
    entry.update(fields)
    lines = "".join(f"{key} = {value!r}\n" for key, value in entry.items() if value != "-")
    return "[[topic]]\n" + lines.replace("'", '"')


def test_a_window_topic_loads_with_its_window(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text(window_entry())
    [topic] = load_topics_file(path)
    assert topic.window is not None
    assert (topic.window.window_ms, topic.window.resolution_ms) == (3_600_000, 10_000)
    assert topic.query_for(None, (1000, 2000)) == (
        "SELECT mean(v) FROM m WHERE time >= 1000ms AND time < 2000ms"
        " GROUP BY time(10s), host fill(none)"
    )
    with pytest.raises(ValueError, match="window topics only"):
        topic.query_for(None)


def test_the_builtin_latency_history_is_a_window_topic_not_a_default() -> None:
    catalog = build_catalog(BUILTIN_TOPICS, None)
    topic = catalog["latency-history"]
    assert topic.window is not None
    assert (topic.window.window, topic.window.resolution) == ("1h", "10s")
    assert "latency-history" not in Settings().default_topics


def test_a_tenant_window_topic_fills_the_time_range_before_the_tenant() -> None:
    topic = Topic(
        name="h",
        query="SELECT v FROM m WHERE t = {tenant} AND $timeFilter GROUP BY time(10s)",
        shape=series_data,
        window=WindowSpec.parse("1h", "10s"),
    )
    assert topic.is_tenant_topic
    assert topic.query_for("$timeFilter", (1, 2)) == (
        "SELECT v FROM m WHERE t = '$timeFilter' AND time >= 1ms AND time < 2ms GROUP BY time(10s)"
    )


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"kind": "table"}, "'kind' must be \"window\""),
        ({"window": "-"}, "needs 'window' and 'resolution'"),
        ({"resolution": "10"}, "is not a duration"),
        ({"resolution": "7s"}, "must divide"),
        ({"query": "SELECT v FROM m GROUP BY time(10s)"}, "needs $timeFilter"),
        ({"query": "SELECT v FROM m WHERE $timeFilter GROUP BY host"}, "must GROUP BY time(10s)"),
        ({"query": "SELECT v FROM m WHERE $timeFilter GROUP BY time(1m)"}, "must GROUP BY time"),
        ({"query": WINDOW_QUERY + "; SELECT 1"}, "one statement"),
        ({"kind": "-"}, "'window' needs kind = \"window\""),
        ({"kind": "-", "window": "-", "resolution": "-"}, "$timeFilter needs kind"),
    ],
)
def test_invalid_window_topics_name_the_problem(
    tmp_path: Path, fields: dict[str, str], problem: str
) -> None:
    path = tmp_path / "topics.toml"
    path.write_text(window_entry(**fields))
    with pytest.raises(TopicsFileError, match="--topics-file") as raised:
        load_topics_file(path)
    assert problem in str(raised.value)
