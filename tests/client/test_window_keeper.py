"""The Python client's window keeping (broadcaster/client/window.py), pure: the seq rule of
docs/protocol.md's window topics, message by message. The same client against the real
service is tests/client/test_client_window.py."""

from __future__ import annotations

from typing import Any

import pytest

from broadcaster.client.messages import MetricsUpdate
from broadcaster.client.window import AppendOutcome, Windows, apply_append

WINDOW: dict[str, Any] = {
    "window": "1m",
    "resolution": "10s",
    "from": 0,
    "to": 5,
    "asOf": None,
    "series": [{"name": "m", "tags": {"r": "a"}, "columns": ["time", "v"], "values": [[0, 1]]}],
}


def update(seq: int, data: Any = WINDOW) -> MetricsUpdate:
    message = {"type": "metrics_update", "topic": "h", "seq": seq, "timestamp": "t", "data": data}
    return MetricsUpdate("h", seq, "t", False, data, message)


def append(seq: int, time: int = 10) -> dict[str, Any]:
    series = [{"name": "m", "tags": {"r": "a"}, "columns": ["time", "v"], "values": [[time, 2]]}]
    data = {"from": 0, "to": time + 5, "asOf": None, "series": series}
    return {"type": "metrics_append", "topic": "h", "seq": seq, "timestamp": "t", "data": data}


def test_appends_in_order_are_merged_and_delivered_as_the_whole_window() -> None:
    windows = Windows()
    windows.on_update(update(3))
    outcome = windows.on_append(append(4))
    assert outcome.update is not None
    assert outcome.update.seq == 4
    assert outcome.update.data == apply_append(WINDOW, append(4)["data"])
    assert outcome.update["type"] == "metrics_update"
    assert outcome.update["data"] is outcome.update.data
    assert windows.on_append(append(4)) == AppendOutcome()  # already merged


def test_a_gap_asks_for_one_snapshot_and_again_only_when_its_answer_is_lost() -> None:
    windows = Windows()
    windows.on_update(update(3))
    assert windows.on_append(append(5)) == AppendOutcome(ask_snapshot=True)
    assert windows.on_append(append(6)) == AppendOutcome()
    assert windows.on_append(append(7)) == AppendOutcome(ask_snapshot=True)
    windows.on_update(update(7))
    outcome = windows.on_append(append(8))
    assert outcome.update is not None
    assert outcome.update.seq == 8


def test_no_window_asks_for_a_snapshot_and_a_plain_value_forgets_the_window() -> None:
    windows = Windows()
    assert windows.on_append(append(2)) == AppendOutcome(ask_snapshot=True)
    windows.on_update(update(3))
    windows.on_update(update(4, {"n": 1}))
    assert windows.on_append(append(5)) == AppendOutcome(ask_snapshot=True)
    windows.on_update(update(6))
    windows.forget(["h"])
    assert windows.on_append(append(7)) == AppendOutcome(ask_snapshot=True)
    with pytest.raises(ValueError, match="malformed"):
        windows.on_append({"type": "metrics_append", "topic": "h", "seq": True})
