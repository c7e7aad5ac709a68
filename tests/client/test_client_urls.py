"""The Python client given several URLs (the nodes of a cluster without a load balancer):
each connection attempt goes to the next URL. A real service on loopback (an in-process
source: the URLs are under test, not the data), real clock, short backoff. A client that
moves off a killed cluster node: tests/cluster/test_cluster_e2e.py.
"""

from __future__ import annotations

import pytest
import trio

from broadcaster.client import ReconnectPolicy, open_client
from tests.influxd import free_port
from tests.services import StartService

SHORT = ReconnectPolicy(base_delay_s=0.05, max_delay_s=0.1, max_attempts=100)


async def test_a_dead_first_url_is_followed_by_the_next_one(start_service: StartService) -> None:
    service = await start_service(default_topics="overview")
    dead = f"ws://127.0.0.1:{free_port()}/ws"
    live = f"ws://127.0.0.1:{service.websocket.port}/ws"
    async with open_client([dead, live], reconnect=SHORT) as client:
        with trio.fail_after(10):
            status = await client.wait_status(lambda s: s.connection_id is not None)
    assert status.connection_id is not None


async def test_no_url_is_refused() -> None:
    with pytest.raises(ValueError, match="no URL"):
        async with open_client([]):
            pass  # pragma: no cover
