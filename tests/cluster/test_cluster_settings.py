"""The cluster's settings: ``--redis-url``, ``--cluster-name``, ``--node-id`` (pure, no I/O)."""

from __future__ import annotations

import pytest

from broadcaster.cli import build_parser, settings_from
from broadcaster.config import build_settings
from broadcaster.errors import ConfigError


def test_standalone_by_default() -> None:
    settings = build_settings({})
    assert settings.redis_url is None
    assert settings.cluster_name == "broadcaster"
    assert settings.node_id is None


def test_the_environment_names_them_too() -> None:
    args = build_parser().parse_args(["serve", "--node-id", "web-1"])
    settings = settings_from(
        args,
        {
            "BROADCASTER_REDIS_URL": "rediss://user:secret@redis.example.com:6380/2",
            "BROADCASTER_CLUSTER_NAME": "noc-eu",
            "BROADCASTER_NODE_ID": "from-env",
        },
    )
    assert settings.redis_url == "rediss://user:secret@redis.example.com:6380/2"
    assert settings.cluster_name == "noc-eu"
    assert settings.node_id == "web-1"  # the flag wins


def test_a_redis_url_of_another_scheme_is_refused_without_showing_its_password() -> None:
    with pytest.raises(ConfigError) as raised:
        build_settings({"redis_url": "http://user:secret@redis:6379"})
    assert raised.value.setting == "--redis-url"
    assert "secret" not in str(raised.value)


@pytest.mark.parametrize("name", ["", "a b", "a:b", "x" * 65])
def test_a_cluster_name_that_cannot_prefix_a_key_is_refused(name: str) -> None:
    with pytest.raises(ConfigError) as raised:
        build_settings({"cluster_name": name})
    assert raised.value.setting == "--cluster-name"


def test_an_empty_redis_url_means_standalone() -> None:
    assert build_settings({"redis_url": ""}).redis_url is None
