"""``build_settings``: every validator, the cross-field rules, how errors name a setting, and
the CLI's flag-then-environment lookup (``settings_from``).

Pure functions, no I/O: each case states the exact ``ConfigError`` (flag, value, problem) an
operator would read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from broadcaster.cli import build_parser, settings_from
from broadcaster.config import Settings, build_settings, env_name, flag_name
from broadcaster.errors import ConfigError


def config_error(values: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as raised:
        build_settings(values)
    return raised.value


def test_no_values_give_the_documented_defaults() -> None:
    settings = build_settings({})
    assert (settings.ws_host, settings.ws_port) == ("127.0.0.1", 8765)
    assert (settings.http_host, settings.http_port) == ("127.0.0.1", 8080)
    assert settings.influx_base_url == "http://127.0.0.1:8086"
    assert settings.influx_db == "metrics"
    assert settings.default_topics == ("overview", "regressions")
    assert settings.topics_file is None
    assert (settings.log_format, settings.log_level) == ("json", "info")


def test_strings_from_flags_are_converted_to_their_types() -> None:
    settings = build_settings(
        {
            "ws_port": "0",
            "broadcast_interval_ms": "1500",
            "client_messages_per_s": "0.5",
            "reconnect_after_ms": "0",
            "influx_url": "http://db.example:8086/",
            "topics_file": "topics.toml",
        }
    )
    assert settings.ws_port == 0
    assert settings.broadcast_interval_ms == 1500
    assert settings.client_messages_per_s == 0.5
    assert settings.reconnect_after_ms == 0
    assert settings.influx_base_url == "http://db.example:8086"
    assert settings.topics_file == Path("topics.toml")


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("ws_port", "-1", "Input should be greater than or equal to 0"),
        ("ws_port", "65536", "Input should be less than or equal to 65535"),
        (
            "http_port",
            "abc",
            "Input should be a valid integer, unable to parse string as an integer",
        ),
        ("ws_host", "  ", "Value error, must not be empty"),
        ("http_host", "", "Value error, must not be empty"),
        ("influx_url", "not a url", "Input should be a valid URL, relative URL without a base"),
        ("influx_db", "", "String should have at least 1 character"),
        ("query_timeout_ms", "0", "Input should be greater than 0"),
        ("broadcast_interval_ms", "86400001", "Input should be less than or equal to 86400000"),
        ("tick_offset_ms", "-1", "Input should be greater than or equal to 0"),
        ("tick_offset_ms", "86400001", "Input should be less than or equal to 86400000"),
        ("heartbeat_interval_ms", "-5", "Input should be greater than 0"),
        ("stats_interval_ms", "0", "Input should be greater than 0"),
        ("shutdown_timeout_ms", "0", "Input should be greater than 0"),
        ("send_stall_timeout_ms", "0", "Input should be greater than 0"),
        ("reconnect_after_ms", "-1", "Input should be greater than or equal to 0"),
        ("reconnect_after_ms", "3600001", "Input should be less than or equal to 3600000"),
        ("max_message_bytes", "127", "Input should be greater than or equal to 128"),
        ("max_connections", "0", "Input should be greater than or equal to 1"),
        (
            "max_connections",
            "1.5",
            "Input should be a valid integer, unable to parse string as an integer",
        ),
        ("outbox_messages", "1", "Input should be greater than or equal to 2"),
        ("max_pending_output_bytes", "1023", "Input should be greater than or equal to 1024"),
        ("client_messages_per_s", "0", "Input should be greater than 0"),
        (
            "client_messages_per_s",
            "fast",
            "Input should be a valid number, unable to parse string as a number",
        ),
        ("client_message_burst", "0", "Input should be greater than or equal to 1"),
        ("client_bytes_per_s", "1023", "Input should be greater than or equal to 1024"),
        ("client_frames_per_s", "0", "Input should be greater than or equal to 1"),
        ("max_message_fragments", "0", "Input should be greater than or equal to 1"),
        ("log_format", "xml", "Input should be 'json' or 'console'"),
        ("log_level", "trace", "Input should be 'debug', 'info', 'warning' or 'error'"),
        ("no_such_setting", "1", "Extra inputs are not permitted"),
    ],
)
def test_a_bad_value_is_named_by_its_flag_with_the_value_given(
    field: str, value: str, problem: str
) -> None:
    error = config_error({field: value})
    assert (error.setting, error.value, error.problem) == (flag_name(field), value, problem)
    assert str(error) == f"{flag_name(field)}: invalid value {value!r}: {problem}"


@pytest.mark.parametrize(
    ("field", "lowest", "highest"),
    [
        ("ws_port", 0, 65535),
        ("query_timeout_ms", 1, 86_400_000),
        ("reconnect_after_ms", 0, 3_600_000),
        ("tick_offset_ms", 0, 86_400_000),
        ("max_message_bytes", 128, 64 * 1024 * 1024),
        ("max_connections", 1, 1_000_000),
        ("outbox_messages", 2, 100_000),
        ("max_pending_output_bytes", 1024, 1 << 30),
        ("client_message_burst", 1, 100_000),
        ("client_bytes_per_s", 1024, 1 << 30),
        ("client_frames_per_s", 1, 1_000_000),
        ("max_message_fragments", 1, 100_000),
    ],
)
def test_the_bounds_themselves_are_accepted(field: str, lowest: int, highest: int) -> None:
    assert getattr(build_settings({field: str(lowest)}), field) == lowest
    assert getattr(build_settings({field: str(highest)}), field) == highest


@pytest.mark.parametrize("timeout_ms", ["5000", "4999"])
def test_connection_timeout_must_be_longer_than_the_heartbeat(timeout_ms: str) -> None:
    error = config_error({"heartbeat_interval_ms": "5000", "connection_timeout_ms": timeout_ms})
    assert error.setting == "--connection-timeout-ms"
    assert error.value == int(timeout_ms)
    assert error.problem == "must be longer than --heartbeat-interval-ms"
    settings = build_settings({"heartbeat_interval_ms": "5000", "connection_timeout_ms": "5001"})
    assert settings.connection_timeout_ms == 5001


@pytest.mark.parametrize(
    "credentials",
    [
        {"influx_username": "u"},
        {"influx_password": "p"},
        {"influx_username": "u", "influx_password": "p"},
    ],
)
def test_a_token_with_a_user_or_password_is_refused_without_showing_the_token(
    credentials: dict[str, str],
) -> None:
    error = config_error({"influx_token": "s3cret", **credentials})
    assert (error.setting, error.value, error.problem) == (
        "--influx-token",
        "***",
        "give either a token or a username and password, not both",
    )
    assert "s3cret" not in str(error)


def test_a_username_needs_a_password_and_a_password_a_username() -> None:
    error = config_error({"influx_username": "u"})
    assert (error.setting, error.value, error.problem) == (
        "--influx-username",
        "u",
        "needs --influx-password too",
    )
    error = config_error({"influx_password": "p4ss"})
    assert (error.setting, error.value, error.problem) == (
        "--influx-password",
        "***",
        "needs --influx-username too",
    )
    assert "p4ss" not in str(error)
    both = build_settings({"influx_username": "u", "influx_password": "p"})
    assert (both.influx_username, both.influx_password, both.influx_token) == ("u", "p", None)
    token = build_settings({"influx_token": "t"})
    assert (token.influx_token, token.influx_username) == ("t", None)


@pytest.mark.parametrize(
    "keys", [{}, {"jwt_secret_file": "s", "jwks_url": "https://auth.example/jwks.json"}]
)
def test_jwt_mode_needs_exactly_one_key_source(keys: dict[str, str]) -> None:
    error = config_error({"auth_mode": "jwt", **keys})  # the CLI exits 2 with this line
    assert (error.setting, error.value) == ("--auth-mode", "jwt")
    assert "exactly one of --jwt-secret-file, --jwt-public-key-file, --jwks-url" in error.problem


@pytest.mark.parametrize(
    ("given", "topics"),
    [
        ("cpu", ("cpu",)),
        ("overview,cpu", ("overview", "cpu")),
        (" overview , cpu ,, ", ("overview", "cpu")),
        ("", ()),
        (" , ", ()),
        (("a", "b"), ("a", "b")),
    ],
)
def test_default_topics_are_a_comma_separated_list(
    given: str | tuple[str, ...], topics: tuple[str, ...]
) -> None:
    assert build_settings({"default_topics": given}).default_topics == topics


def test_default_topics_of_the_wrong_type_are_refused() -> None:
    error = config_error({"default_topics": 5})
    assert (error.setting, error.value, error.problem) == (
        "--default-topics",
        5,
        "Input should be a valid tuple",
    )


def test_only_the_first_bad_setting_is_reported() -> None:
    error = config_error({"ws_port": "-1", "http_port": "-1"})
    assert error.setting == "--ws-port"


# --- where a value comes from: the flag, else the environment, else the default ---------------


def from_cli(flags: list[str], environ: dict[str, str]) -> Settings:
    return settings_from(build_parser().parse_args(["serve", *flags]), environ)


def test_names_of_a_setting() -> None:
    assert flag_name("max_pending_output_bytes") == "--max-pending-output-bytes"
    assert env_name("max_pending_output_bytes") == "BROADCASTER_MAX_PENDING_OUTPUT_BYTES"


def test_a_bad_environment_value_is_named_by_its_flag() -> None:
    # One name per setting in every message, whichever way it came: the flag (the help text
    # lists the environment variable next to it).
    with pytest.raises(ConfigError) as raised:
        from_cli([], {"BROADCASTER_MAX_CONNECTIONS": "lots"})
    assert raised.value.setting == "--max-connections"
    assert raised.value.value == "lots"
    assert "BROADCASTER_MAX_CONNECTIONS" not in str(raised.value)


def test_reuse_port_is_a_flag_without_a_value_or_a_boolean_in_the_environment() -> None:
    assert from_cli([], {}).reuse_port is False
    assert from_cli(["--reuse-port"], {}).reuse_port is True
    assert from_cli(["--reuse-port"], {"BROADCASTER_REUSE_PORT": "false"}).reuse_port is True
    assert from_cli([], {"BROADCASTER_REUSE_PORT": "true"}).reuse_port is True
    assert from_cli([], {"BROADCASTER_REUSE_PORT": "0"}).reuse_port is False
    with pytest.raises(ConfigError) as raised:
        from_cli([], {"BROADCASTER_REUSE_PORT": "maybe"})
    assert (raised.value.setting, raised.value.value) == ("--reuse-port", "maybe")
    with pytest.raises(SystemExit):  # a value after it is not its value
        from_cli(["--reuse-port", "yes"], {})


def test_a_good_flag_hides_a_bad_environment_value() -> None:
    settings = from_cli(["--max-connections", "5"], {"BROADCASTER_MAX_CONNECTIONS": "lots"})
    assert settings.max_connections == 5


def test_an_empty_environment_value_is_given_not_unset() -> None:
    # "" is a value: it overrides the default, and is validated like any other.
    assert from_cli([], {"BROADCASTER_DEFAULT_TOPICS": ""}).default_topics == ()
    assert from_cli([], {"BROADCASTER_TOPICS_FILE": ""}).topics_file is None
    with pytest.raises(ConfigError) as raised:
        from_cli([], {"BROADCASTER_INFLUX_DB": ""})
    assert (raised.value.setting, raised.value.value) == ("--influx-db", "")


def test_an_empty_flag_beats_the_environment() -> None:
    settings = from_cli(
        ["--default-topics", "", "--topics-file", ""],
        {"BROADCASTER_DEFAULT_TOPICS": "cpu", "BROADCASTER_TOPICS_FILE": "topics.toml"},
    )
    assert settings.default_topics == ()
    assert settings.topics_file is None


def test_unrelated_environment_variables_are_ignored() -> None:
    environ = {"WS_PORT": "1", "BROADCASTER_NO_SUCH_SETTING": "x", "BROADCASTER_ws_port": "2"}
    assert from_cli([], environ) == build_settings({})
