"""The cluster: how several processes share one query per channel per tick.

The broadcast loop talks to a :class:`~broadcaster.cluster.broker.Broker` only: the
in-process :class:`~broadcaster.cluster.local.LocalBroker` (standalone, one process) or the
:class:`~broadcaster.cluster.redis_broker.RedisBroker` (``--redis-url``: a cluster of
processes sharing one Redis). The node registry behind ``GET /api/cluster/status`` is
:mod:`broadcaster.cluster.registry`.
"""
