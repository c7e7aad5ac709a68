"""The test suite's rules, and the fixtures every folder shares.

Rules
=====

Time
    Anything about timers (the broadcast loop's ticks, heartbeats, rate limits, backoff, stats,
    source health, GC pacing) runs in virtual time: the test takes pytest-trio's
    ``autojump_clock`` fixture (``trio.testing.MockClock(autojump_threshold=0)``), so a
    ``trio.sleep(60)`` in the test or the code under test returns as soon as every task is
    blocked, and the test asserts exact counts at exact virtual instants. Such tests use
    in-memory parts (``tests/fakes.py``: ``make_hub``, ``FakeSource``), never sockets, which the
    virtual clock cannot see.

Real things
    End-to-end tests use real things on loopback (127.0.0.1, ports 0): a real influxd
    (``influxd``, one per session, ``influx_db`` a fresh database per test), real TCP and
    WebSocket sockets, real subprocesses (the CLI, node, a browser). They run on the real clock,
    so every wait has a generous deadline (``trio.fail_after``) and waits for an event: a
    message, a status change, a process exit. ``tests/wsclient.eventually`` polls only state
    that announces itself by no event (another process's counters, the status endpoint).

Fakes
    A fake replaces a real part only when that part is not what the test is about, and the
    module's docstring says why (e.g. the socket-side tests in ``tests/ws`` take their values
    from an in-process source: they test sockets, not the database). Fakes are small classes in
    ``tests/fakes.py`` or ``tests/client_fakes.py``, not mocks; monkeypatching is for injecting
    a failure where no seam exists.

Never
    No bare ``sleep`` as synchronisation (a sleep is allowed only as the thing under test:
    "nothing happens for two intervals"). No unbounded loop: every loop that waits is under a
    deadline or counts its rounds. No randomness: Hypothesis runs the derandomized profile
    below, and tests that need random numbers seed them.

Shared fixtures
===============

``influxd`` / ``influx_db``
    The session's real influxd; a new, empty database per test, dropped afterwards.
``start_service``
    ``await start_service(**overrides)`` runs ``serve()`` in the test's nursery on an
    in-process source (a :class:`~tests.fakes.FakeSource` unless ``source=`` is given), with
    :func:`~tests.services.make_settings` (ports 0, quiet logs) plus ``overrides``; its type
    is :class:`tests.services.StartService`.
``start_service_on_influxd``
    The same against the real influxd and the test's ``influx_db``
    (:class:`tests.services.StartServiceOnInfluxd`).
``scratch``
    A per-test scratch directory.

Folders add their own: ``tests/ws/conftest.py`` has ``hub`` (in memory) and ``endpoint`` (the
real WebSocket server on it, port 0) for tests of the socket side without the whole service.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import settings

from broadcaster.service import RunningService, serve
from broadcaster.sources.base import MetricsSource
from tests.fakes import FakeSource
from tests.influxd import Influxd, running_influxd
from tests.redis_server import RedisServer, running_redis
from tests.services import StartService, StartServiceOnInfluxd, make_settings

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


@pytest.fixture
async def start_service(nursery: trio.Nursery) -> StartService:
    """Start the service in the test's nursery on an in-process source; see the docstring."""

    async def start(*, source: MetricsSource | None = None, **overrides: Any) -> RunningService:
        settings = make_settings(**overrides)
        started: RunningService = await nursery.start(
            partial(serve, settings, source=FakeSource() if source is None else source)
        )
        return started

    return start


@pytest.fixture
async def start_service_on_influxd(
    nursery: trio.Nursery, influxd: Influxd, influx_db: str
) -> StartServiceOnInfluxd:
    """Start the service in the test's nursery against the real influxd and ``influx_db``."""

    async def start(**overrides: Any) -> RunningService:
        settings = make_settings(**{"influx_url": influxd.url, "influx_db": influx_db, **overrides})
        started: RunningService = await nursery.start(partial(serve, settings))
        return started

    return start


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server on a free loopback port, in its own temp dir, for one test."""
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server
