"""Fixtures of the cluster tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import coredis
import pytest

from tests.redis_server import RedisServer


@pytest.fixture
async def redis_client(redis_server: RedisServer) -> AsyncIterator[coredis.Redis[bytes]]:
    """A coredis client of the test's redis-server, to read the cluster's keys."""
    client = coredis.Redis.from_url(redis_server.url)
    async with client:
        yield client
