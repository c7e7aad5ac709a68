"""docs/asyncapi.yaml: valid AsyncAPI, and true to the code and to the real service.

- The official AsyncAPI CLI's ``asyncapi validate`` finds no error or warning in the document
  (@asyncapi/cli, locked in scripts/asyncapi_cli), and does fail on a broken copy.
- Its enums, limits and close codes are those of broadcaster/protocol.py and docs/protocol.md.
- The real service, driven to send every message type it can without tokens, sends nothing
  the document does not describe (no undocumented field either: tests/protocol_schemas.py).
  The messages of the auth flow are checked as the protocol module builds them here, and end
  to end wherever a test reads a message through ``tests.wsclient.next_message``; the Python
  client's messages are checked by ``tests.client_fakes`` in every client test.

The service's values come from an in-process source (``FakeSource``), which the test can take
down and bring back: what is tested is the wire, not the database path.
"""

from __future__ import annotations

import os
import re
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from broadcaster import __version__, protocol
from broadcaster.protocol import CloseCode, ErrorCode, FailureCause
from broadcaster.service import RunningService, serve
from tests import REPO
from tests.fakes import FakeSource
from tests.node_tools import ensure_asyncapi_cli, ensure_node
from tests.protocol_schemas import (
    ASYNCAPI,
    assert_client_message,
    assert_server_message,
    document,
    schema_names_by_type,
    validator,
)
from tests.services import HISTORY_TOPIC, make_settings, write_topics_file
from tests.wsclient import JSON, connect, next_message, send_json

# The CLI's usage analytics, off: no network, and nothing written to the home folder.
ANALYTICS_OFF = {"analyticsEnabled": "false", "infoMessageShown": "true", "userID": "tests"}


def feed_and_history_topics(directory: Path) -> Path:
    """A topics file with ``feed`` (a plain topic) and ``history`` (a window topic)."""
    path = Path(write_topics_file(directory, feed="SELECT feed"))
    path.write_text(path.read_text() + HISTORY_TOPIC)
    return path


def schemas() -> dict[str, Any]:
    return dict(document()["components"]["schemas"])


# --- the document ----------------------------------------------------------------------------


async def asyncapi_validate(document_path: Path, tmp_path: Path) -> tuple[int, str]:
    """``asyncapi validate --fail-severity warn DOCUMENT``: its exit code and output."""
    cli = await trio.to_thread.run_sync(ensure_asyncapi_cli)
    node = await trio.to_thread.run_sync(ensure_node)
    analytics = tmp_path / "asyncapi-analytics.json"
    analytics.write_bytes(orjson.dumps(ANALYTICS_OFF))
    environment = {
        **os.environ,
        "ASYNCAPI_METRICS_CONFIG_PATH": str(analytics),
        "CI": "true",
        "NO_COLOR": "1",
    }
    command = [node, str(cli), "validate", str(document_path), "--fail-severity", "warn"]
    with trio.fail_after(120):
        done = await trio.run_process(
            command, capture_stdout=True, capture_stderr=True, check=False, env=environment
        )
    return done.returncode, (done.stdout + done.stderr).decode()


async def test_asyncapi_validate_finds_no_error_or_warning(tmp_path: Path) -> None:
    """The official tooling: the AsyncAPI schema of the spec and the parser's Spectral rules.
    Stricter than the CLI's default (errors only): warnings fail too."""
    returncode, output = await asyncapi_validate(ASYNCAPI, tmp_path)
    assert returncode == 0, output
    assert "is valid" in output, output
    assert "0 errors, 0 warnings" in output or "problem" not in output, output


async def test_asyncapi_validate_fails_on_a_broken_document(tmp_path: Path) -> None:
    """The check above can fail: a message whose payload points at no schema is refused."""
    broken = tmp_path / "asyncapi.yaml"
    text = ASYNCAPI.read_text()
    assert text.count("#/components/schemas/Welcome") >= 1
    broken.write_text(text.replace("#/components/schemas/Welcome", "#/components/schemas/Nowhere"))
    returncode, output = await asyncapi_validate(broken, tmp_path)
    assert returncode != 0, output
    assert "invalid-ref" in output, output
    assert "is valid" not in output, output


def test_enums_and_limits_are_those_of_the_protocol_module() -> None:
    found = schemas()
    assert found["ErrorCode"]["enum"] == [code.value for code in ErrorCode]
    assert found["FailureCause"]["enum"] == [cause.value for cause in FailureCause]
    assert found["TopicRequest"]["maxItems"] == protocol.MAX_TOPICS_PER_MESSAGE
    assert found["TopicName"]["maxLength"] == protocol.MAX_TOPIC_NAME_CHARS
    assert found["Auth"]["properties"]["token"]["maxLength"] == protocol.MAX_TOKEN_CHARS
    assert found["Pong"]["properties"]["id"]["maxLength"] == protocol.MAX_PING_ID_CHARS
    assert found["Error"]["properties"]["topics"]["maxItems"] == protocol.MAX_UNKNOWN_TOPICS_NAMED
    assert document()["info"]["version"] == __version__


def test_close_codes_are_those_of_the_code_and_of_protocol_md() -> None:
    channel = document()["channels"]["connection"]
    listed = [entry["code"] for entry in channel["x-close-codes"]]
    assert listed == sorted(set(listed))
    prose = (REPO / "docs" / "protocol.md").read_text()
    section = prose.split("## Close codes and reconnecting", 1)[1].split("\n## ", 1)[0]
    in_protocol_md = {int(code) for code in re.findall(r"^\| (\d{4}) \|", section, re.M)}
    in_description = {
        int(code) for code in re.findall(r"^\| (\d{4}) \|", channel["description"], re.M)
    }
    assert set(listed) == in_protocol_md == in_description
    assert {int(code) for code in CloseCode} <= set(listed)


def test_every_example_matches_its_schema_and_every_message_its_type() -> None:
    messages = document()["components"]["messages"]
    all_types = {**schema_names_by_type("ServerMessage"), **schema_names_by_type("ClientMessage")}
    assert {m["name"] for m in messages.values()} == set(all_types)
    for message in messages.values():
        schema_name = message["payload"]["$ref"].rsplit("/", 1)[1]
        assert all_types[message["name"]] == schema_name
        assert message["examples"], message["name"]
        for example in message["examples"]:
            errors = list(validator(schema_name).iter_errors(example["payload"]))
            assert not errors, (message["name"], example["name"], errors)


def test_what_the_protocol_module_builds_matches_the_document() -> None:
    """Including what the service without tokens cannot be made to send (the auth flow)."""
    identity = protocol.WelcomeIdentity(sub="noc-wall", tenant=None, expires_at_unix_s=1.8e9)
    unknown_message, unknown_extra = protocol.invalid_topic_error(["a", "b", "c", "d"], 5)
    failed_message, failed_extra = protocol.query_failed_error(
        "overview", FailureCause.TIMEOUT, "no answer within 5000 ms"
    )
    built = [
        protocol.welcome("ws_1_1795308854343", ["a"], [], 10_000),
        protocol.welcome("ws_1_1795308854343", ["a"], ["a"], 10_000, identity=identity),
        protocol.auth_refreshed(1.8e9 + 0.5),
        protocol.metrics_update("a", 1, protocol.iso_now(), {"v": 1}, stale=True, epoch="e1"),
        protocol.metrics_append(
            "h",
            2,
            protocol.iso_now(),
            {
                "from": 1,
                "to": 2,
                "asOf": None,
                "series": [{"name": "m", "tags": {}, "columns": ["time"], "values": [[1]]}],
            },
            epoch="e1",
        ),
        protocol.error(
            ErrorCode.NOT_SUBSCRIBED, *protocol.not_subscribed_error("h")[:1], topic="h"
        ),
        protocol.subscription_confirmed([]),
        protocol.server_shutdown("server shutting down", 0),
        protocol.error(ErrorCode.INVALID_TOPIC, unknown_message, **unknown_extra),
        protocol.error(ErrorCode.INFLUXDB_UNAVAILABLE, failed_message, **failed_extra),
        protocol.error(ErrorCode.INVALID_TOKEN, "invalid token: token expired"),
        protocol.error(ErrorCode.FORBIDDEN_TOPIC, "not allowed", topics=["x"], forbiddenCount=1),
        *(protocol.pong(ping_id) for ping_id in (None, True, -(2**63), 2**64 - 1, 0.5, "")),
    ]
    for message in built:
        assert_server_message(orjson.loads(message))


def test_client_messages_the_server_accepts_match_the_document() -> None:
    accepted: list[JSON] = [
        {"type": "subscribe", "topics": ["t" * protocol.MAX_TOPIC_NAME_CHARS]},
        {"type": "unsubscribe", "topics": ["a"] * protocol.MAX_TOPICS_PER_MESSAGE},
        {"type": "auth", "token": "x" * protocol.MAX_TOKEN_CHARS},
        *({"type": "ping", "id": i} for i in (None, False, 2**64 - 1, -(2**63), 1e18, "i" * 128)),
        {"type": "ping"},
        {"type": "snapshot", "topic": "t" * protocol.MAX_TOPIC_NAME_CHARS},
    ]
    refused: list[JSON] = [
        {"type": "subscribe", "topics": []},
        {"type": "subscribe", "topics": ["a"] * (protocol.MAX_TOPICS_PER_MESSAGE + 1)},
        {"type": "auth", "token": ""},
        {"type": "ping", "id": [1]},
        {"type": "ping", "id": -(2.0**64)},
        {"type": "ping", "id": "i" * 129},
        {"type": "snapshot", "topic": ""},
        {"type": "snapshot"},
    ]
    for message in accepted:
        protocol.parse_client_message(orjson.dumps(message).decode())  # does not raise
        assert_client_message(message)
    for message in refused:
        schema = validator(schema_names_by_type("ClientMessage")[message["type"]])
        assert not schema.is_valid(message), message


# --- the real service --------------------------------------------------------------------------


class Recorder:
    """Reads one connection, keeping every message (each checked by ``next_message``)."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self.seen: list[JSON] = []

    async def until(self, wanted: dict[str, Any], timeout_s: float = 10) -> JSON:
        """The next message whose fields include ``wanted``."""
        with trio.fail_after(timeout_s):
            while True:
                message = await next_message(self.ws, timeout_s)
                self.seen.append(message)
                if wanted.items() <= message.items():
                    return message


async def test_every_message_the_service_sends_matches_the_document(
    nursery: trio.Nursery, tmp_path: Any
) -> None:
    source = FakeSource()
    stop = trio.Event()
    topics_file = feed_and_history_topics(tmp_path)
    settings = make_settings(
        topics_file=topics_file,
        default_topics="feed",
        broadcast_interval_ms=200,
        client_message_burst=30,
    )
    service: RunningService = await nursery.start(
        partial(serve, settings, source=source, stop=stop)
    )
    async with connect(f"ws://127.0.0.1:{service.websocket.port}/ws") as ws:
        read = Recorder(ws)
        await read.until({"type": "welcome"})
        await read.until({"type": "metrics_update", "stale": False})

        await send_json(ws, {"type": "unsubscribe", "topics": ["feed"]})
        await read.until({"type": "subscription_confirmed", "topics": []})
        await send_json(ws, {"type": "snapshot", "topic": "feed"})
        await read.until({"type": "error", "code": "not_subscribed", "topic": "feed"})
        await send_json(ws, {"type": "subscribe", "topics": ["history"]})
        await read.until({"type": "metrics_update", "topic": "history"})
        await read.until({"type": "metrics_append", "topic": "history"})
        await send_json(ws, {"type": "snapshot", "topic": "history"})
        await read.until({"type": "metrics_update", "topic": "history"})
        await send_json(ws, {"type": "unsubscribe", "topics": ["history"]})
        await read.until({"type": "subscription_confirmed", "topics": []})
        await send_json(ws, {"type": "subscribe", "topics": ["feed", "nope"]})
        await read.until({"type": "error", "code": "invalid_topic"})
        await read.until({"type": "subscription_confirmed", "topics": ["feed"]})

        for ping_id in (True, 7, -(2**63), 2**64 - 1, 1.5, "abc"):
            await send_json(ws, {"type": "ping", "id": ping_id})
            pong = await read.until({"type": "pong"})
            assert pong["id"] == ping_id
            assert type(pong["id"]) is type(ping_id)
        await send_json(ws, {"type": "ping", "id": None})
        assert "id" not in await read.until({"type": "pong"})

        for frame, code in [
            ("{not json", "invalid_json"),
            ("[]", "invalid_message"),
            ('{"type": "ping", "id": [1]}', "invalid_message"),
            ('{"type": "dance"}', "unknown_type"),
        ]:
            await ws.send_message(frame)
            await read.until({"type": "error", "code": code})
        await ws.send_message(b"\x00")
        await read.until({"type": "error", "code": "binary_not_supported"})

        for down, rejected, cause in [
            (True, False, "unavailable"),
            (False, True, "query_rejected"),
        ]:
            source.down, source.rejected = down, rejected
            await read.until({"type": "error", "code": "influxdb_unavailable", "cause": cause})
            await read.until({"type": "metrics_update", "stale": True})
        source.rejected = False
        await read.until({"type": "metrics_update", "stale": False})

        for _ in range(60):  # twice the burst: the rest is dropped and reported once
            await send_json(ws, {"type": "ping", "id": "flood"})
        await read.until({"type": "error", "code": "rate_limited"})

        stop.set()
        shutdown = await read.until({"type": "server_shutdown"})
        assert shutdown["reconnectAfterMs"] == settings.reconnect_after_ms
        with pytest.raises(ConnectionClosed) as closed:  # nothing after it but the close
            read.seen.append(await next_message(ws))
        assert closed.value.reason.code == CloseCode.GOING_AWAY

    types = {m["type"] for m in read.seen}
    assert types == set(schema_names_by_type("ServerMessage")) - {"auth_refreshed"}
    codes = {m["code"] for m in read.seen if m["type"] == "error"}
    assert codes == set(ErrorCode) - {ErrorCode.INVALID_TOKEN, ErrorCode.FORBIDDEN_TOPIC}
