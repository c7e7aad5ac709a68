"""Window topics on the client: the whole window, kept up to date by ``metrics_append``.

A window topic (docs/protocol.md, "Window topics") sends its whole window once, as a
``metrics_update``, then only what changed, as ``metrics_append`` messages whose ``seq``
continues the update's. :class:`Windows` keeps each such topic's window for one connection
and hands the application the merged window as one :class:`MetricsUpdate`, like any other
topic's value. Its ``seq`` rule::

    metrics_update (window data)  -> keep it, deliver it                 last = seq
    metrics_append, seq = last+1  -> merge (apply_append), deliver it    last = seq
    metrics_append, seq <= last   -> ignore (already merged)
    metrics_append, other seq     -> a lost append: drop the window, ask for a snapshot
    metrics_append, no window     -> ask for a snapshot (the update was lost or not yet sent)

While a snapshot is awaited, appends are ignored; one two or more past the append that asked
means the answer was lost too (a client that is behind keeps only the newest message per
topic), and a snapshot is asked for again. Everything here is pure: the connection loop sends
the snapshot requests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from broadcaster.client.messages import JSON, MetricsUpdate

SeriesKey = tuple[str, tuple[tuple[str, str], ...]]


def is_window(data: Any) -> bool:
    """Whether a ``metrics_update``'s ``data`` is a window topic's whole window."""
    return isinstance(data, dict) and "window" in data and isinstance(data.get("series"), list)


def series_key(series: JSON) -> SeriesKey:
    """What identifies a series of a window: its name and tags."""
    tags = series.get("tags") or {}
    return str(series.get("name", "")), tuple(sorted((str(k), str(v)) for k, v in tags.items()))


def apply_append(window: JSON, append: JSON) -> JSON:
    """``window`` (a window topic's ``data``) with ``append`` (a ``metrics_append``'s
    ``data``) merged by the protocol's rule; neither is changed.

    Per series (name + tags): a row whose time is already there replaces it, others are
    inserted in time order; then every row older than ``from`` is dropped, and a series left
    empty. Series come out sorted by name and tags, as the server sends them.

    Raises:
        KeyError, TypeError, IndexError: ``append`` or ``window`` is malformed.
    """
    merged: dict[SeriesKey, JSON] = {series_key(s): s for s in window["series"]}
    for series in append["series"]:
        key = series_key(series)
        held = merged.get(key)
        rows = {row[0]: row for row in held["values"]} if held is not None else {}
        rows.update((row[0], row) for row in series["values"])
        merged[key] = {**series, "values": [rows[time] for time in sorted(rows)]}
    start = append["from"]
    kept = []
    for key in sorted(merged):
        values = [row for row in merged[key]["values"] if row[0] >= start]
        if values:
            kept.append({**merged[key], "values": values})
    return {
        **window,
        "from": start,
        "to": append["to"],
        "asOf": append["asOf"],
        "series": kept,
    }


@dataclass
class _Held:
    data: JSON | None  # None: dropped after a gap, a snapshot is awaited
    seq: int
    awaiting_since: int | None = None  # the seq of the append that asked for a snapshot


@dataclass(frozen=True, slots=True)
class AppendOutcome:
    """What to do with one ``metrics_append``: deliver ``update`` (the merged window), and/or
    ask for a snapshot of its topic."""

    update: MetricsUpdate | None = None
    ask_snapshot: bool = False


class Windows:
    """The window topics' windows of one connection (a new connection starts empty)."""

    def __init__(self) -> None:
        self._held: dict[str, _Held] = {}

    def on_update(self, update: MetricsUpdate) -> None:
        """A ``metrics_update``: a window replaces what was held; another value forgets it."""
        if is_window(update.data):
            self._held[update.topic] = _Held(update.data, update.seq)
        else:
            self._held.pop(update.topic, None)

    def forget(self, topics: list[str]) -> None:
        """Stop keeping ``topics`` (unsubscribed)."""
        for topic in topics:
            self._held.pop(topic, None)

    def on_append(self, message: JSON) -> AppendOutcome:
        """Apply one ``metrics_append`` by the rule in the module docstring.

        Raises:
            ValueError: the message is malformed (the caller logs and skips it).
        """
        topic, seq, timestamp = message.get("topic"), message.get("seq"), message.get("timestamp")
        data = message.get("data")
        if (
            not isinstance(topic, str)
            or not isinstance(seq, int)
            or isinstance(seq, bool)
            or not isinstance(timestamp, str)
            or not isinstance(data, dict)
        ):
            raise ValueError("malformed metrics_append")
        held = self._held.get(topic)
        if held is None:
            self._held[topic] = _Held(None, seq, awaiting_since=seq)
            return AppendOutcome(ask_snapshot=True)
        if held.data is None:
            assert held.awaiting_since is not None
            if seq >= held.awaiting_since + 2:
                held.awaiting_since = seq
                return AppendOutcome(ask_snapshot=True)
            return AppendOutcome()
        if seq <= held.seq:
            return AppendOutcome()
        if seq != held.seq + 1:
            self._held[topic] = _Held(None, seq, awaiting_since=seq)
            return AppendOutcome(ask_snapshot=True)
        try:
            merged = apply_append(held.data, data)
        except (KeyError, TypeError, IndexError, AttributeError) as exc:
            raise ValueError(f"malformed metrics_append: {exc!r}") from None
        held.data, held.seq = merged, seq
        as_update = {
            **message,
            "type": "metrics_update",
            "stale": False,
            "data": merged,
        }
        return AppendOutcome(MetricsUpdate(topic, seq, timestamp, False, merged, as_update))
