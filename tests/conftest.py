"""Shared fixtures (a real influxd per session, a fresh database per test); Hypothesis profile."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from tests.influxd import Influxd, running_influxd

# Property tests see the same examples on every run, so a CI failure reproduces anywhere
# (no random seed, no example database written into the tree), and a bounded number of them,
# so they take seconds; no per-example deadline, as timing on shared CI machines is noise.
settings.register_profile(
    "broadcaster", derandomize=True, database=None, deadline=None, max_examples=300
)
settings.load_profile("broadcaster")

_database_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def influxd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Influxd]:
    """A real influxd on 127.0.0.1, its files in a temp dir, for the whole session."""
    with running_influxd(tmp_path_factory.mktemp("influxd")) as server:
        yield server


@pytest.fixture
def influx_db(influxd: Influxd) -> Iterator[str]:
    """A new, empty database name on the session's influxd, dropped afterwards."""
    name = f"test_{next(_database_numbers)}"
    influxd.query(f'CREATE DATABASE "{name}"')
    yield name
    influxd.query(f'DROP DATABASE "{name}"')


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    """A per-test scratch directory."""
    return tmp_path
