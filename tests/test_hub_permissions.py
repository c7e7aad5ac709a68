"""What a connection may subscribe to (the token's ``topics`` claim, tenant topics only with a
tenant) and how tenants' subscriptions are kept apart, on the in-memory hub.

Identities are set on the connection directly, as the auth gate does after a valid token:
these tests are about the hub's decisions, not about tokens (tests/ws/test_auth.py).
"""

from __future__ import annotations

from typing import Any

import orjson

from broadcaster.auth.identity import Identity
from broadcaster.channels import Channel
from broadcaster.protocol import MAX_UNKNOWN_TOPICS_NAMED
from broadcaster.ws.frames import Frame
from tests.fakes import PolicyHub, make_hub, open_connection, sent_messages

TOPICS = ["overview", "region-eu", "region-us", "sales", "stock"]
TENANT_TOPICS = ["sales", "stock"]
EXPIRES_AT_UNIX_S = 1_900_000_000.0


def identity(
    tenant: str | None = None, topics: tuple[str, ...] | None = None, sub: str = "alice"
) -> Identity:
    return Identity(sub=sub, tenant=tenant, topics=topics, expires_at_unix_s=EXPIRES_AT_UNIX_S)


def tenant_hub(defaults: tuple[str, ...] = ()) -> PolicyHub:
    return make_hub(TOPICS, defaults, tenant_topics=TENANT_TOPICS)


def welcome_of(messages: list[dict[str, Any]]) -> dict[str, Any]:
    assert messages[0]["type"] == "welcome"
    return messages[0]


def errors_of(messages: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {m["code"]: m for m in messages if m["type"] == "error"}


# --- welcome and the default topics ----------------------------------------------------------


async def test_without_identity_welcome_lists_every_topic_but_the_tenant_topics() -> None:
    hub = tenant_hub(defaults=("overview", "sales"))
    connection = open_connection(hub)
    welcome = welcome_of(sent_messages(connection))
    assert welcome["topics"] == ["overview", "region-eu", "region-us"]
    assert welcome["subscribed"] == ["overview"]
    assert "identity" not in welcome
    assert "authExpiresAt" not in welcome
    assert connection.subscriptions == {"overview"}


async def test_welcome_lists_what_the_topics_claim_allows_with_globs() -> None:
    hub = tenant_hub(defaults=("overview", "region-eu", "sales"))
    connection = open_connection(hub, identity(topics=("region-*", "sales")))
    welcome = welcome_of(sent_messages(connection))
    # sales is in the claim but is a tenant topic, and this identity has no tenant.
    assert welcome["topics"] == ["region-eu", "region-us"]
    assert welcome["subscribed"] == ["region-eu"]
    assert welcome["identity"] == {"sub": "alice", "tenant": None}
    assert welcome["authExpiresAt"] == "2030-03-17T17:46:40.000Z"
    assert connection.subscriptions == {"region-eu"}


async def test_an_identity_with_a_tenant_gets_the_tenant_topics() -> None:
    hub = tenant_hub(defaults=("overview", "sales"))
    connection = open_connection(hub, identity(tenant="acme"))
    welcome = welcome_of(sent_messages(connection))
    assert welcome["topics"] == TOPICS
    assert welcome["subscribed"] == ["overview", "sales"]
    assert welcome["identity"] == {"sub": "alice", "tenant": "acme"}
    assert hub.channels_with_subscribers() == [Channel("overview", None), Channel("sales", "acme")]


# --- subscribe: forbidden_topic --------------------------------------------------------------


async def test_subscribe_outside_the_topics_claim_is_forbidden_and_the_connection_stays() -> None:
    hub = tenant_hub()
    connection = open_connection(hub, identity(topics=("region-*",)))
    sent_messages(connection)
    hub.subscribe(connection, ("overview",))
    [error] = sent_messages(connection)
    assert error["type"] == "error"
    assert error["code"] == "forbidden_topic"
    assert error["topics"] == ["overview"]
    assert error["forbiddenCount"] == 1
    assert "'overview'" in error["message"]
    assert connection.subscriptions == set()
    assert connection.close_code is None
    assert hub.counters.forbidden_subscriptions == 1
    assert hub.subscriber_counts()["overview"] == 0


async def test_a_tenant_topic_without_a_tenant_is_forbidden() -> None:
    for who in (None, identity(tenant=None)):  # no authentication, or a token without tenant
        hub = tenant_hub()
        connection = open_connection(hub, who)
        sent_messages(connection)
        hub.subscribe(connection, ("sales",))
        [error] = sent_messages(connection)
        assert error["code"] == "forbidden_topic"
        assert error["topics"] == ["sales"]
        assert connection.subscriptions == set()
        assert hub.channels_with_subscribers() == []
        assert hub.counters.forbidden_subscriptions == 1


async def test_allowed_forbidden_and_unknown_in_one_request() -> None:
    hub = tenant_hub()
    connection = open_connection(hub, identity(topics=("region-*", "stock")))
    sent_messages(connection)
    hub.subscribe(connection, ("region-eu", "overview", "nope", "stock", "region-us"))
    messages = sent_messages(connection)
    errors = errors_of(messages)
    assert errors["invalid_topic"]["topics"] == ["nope"]  # unknown stays invalid_topic
    assert errors["forbidden_topic"]["topics"] == ["overview", "stock"]  # stock: no tenant
    assert errors["forbidden_topic"]["forbiddenCount"] == 2
    [confirmed] = [m for m in messages if m["type"] == "subscription_confirmed"]
    assert confirmed["topics"] == ["region-eu", "region-us"]
    assert connection.subscriptions == {"region-eu", "region-us"}
    assert hub.counters.forbidden_subscriptions == 1  # one request refused, counted once


async def test_the_forbidden_topic_error_has_a_bounded_size() -> None:
    topics = [f"t{i}" for i in range(50)]
    hub = make_hub(topics)
    connection = open_connection(hub, identity(topics=("none-of-these",)))
    sent_messages(connection)
    hub.subscribe(connection, tuple(topics))
    [error] = sent_messages(connection)
    assert error["code"] == "forbidden_topic"
    assert error["topics"] == topics[:MAX_UNKNOWN_TOPICS_NAMED]
    assert error["forbiddenCount"] == 50
    assert "and 47 more" in error["message"]


async def test_without_identity_every_topic_for_everyone_may_be_subscribed() -> None:
    hub = make_hub(["a", "b"])
    connection = open_connection(hub)
    sent_messages(connection)
    hub.subscribe(connection, ("a", "b"))
    assert [m["type"] for m in sent_messages(connection)] == ["subscription_confirmed"]
    assert hub.counters.forbidden_subscriptions == 0


# --- tenant channels -------------------------------------------------------------------------


async def test_each_tenant_has_its_own_channel_and_only_its_own_updates() -> None:
    hub = tenant_hub()
    acme = [open_connection(hub, identity(tenant="acme", sub=f"a{i}")) for i in range(2)]
    globex = open_connection(hub, identity(tenant="globex"))
    for connection in (*acme, globex):
        hub.subscribe(connection, ("sales", "overview"))
        sent_messages(connection)
    assert sorted(hub.channels_with_subscribers()) == [
        Channel("overview", None),
        Channel("sales", "acme"),
        Channel("sales", "globex"),
    ]
    # Counts stay per topic (no tenant names in the status API or /metrics).
    assert hub.subscriber_counts() == {
        "overview": 3,
        "region-eu": 0,
        "region-us": 0,
        "sales": 3,
        "stock": 0,
    }
    frame = Frame('{"type":"metrics_update","topic":"sales","data":"acme"}', topic="sales")
    assert hub.publish(Channel("sales", "acme"), frame) == 2
    for connection in acme:
        assert sent_messages(connection) == [orjson.loads(frame.text)]
    assert sent_messages(globex) == []


async def test_a_tenant_channel_left_empty_is_dropped() -> None:
    hub = tenant_hub()
    first = open_connection(hub, identity(tenant="acme"))
    second = open_connection(hub, identity(tenant="acme", sub="bob"))
    hub.subscribe(first, ("sales",))
    hub.subscribe(second, ("sales",))
    hub.unsubscribe(first, ("sales",))
    assert hub.channels_with_subscribers() == [Channel("sales", "acme")]
    hub.close(second)  # as the server does once the connection has ended
    assert hub.channels_with_subscribers() == []
    assert Channel("sales", "acme") not in hub._subscribers  # not kept empty: no growth
    assert hub.subscriber_counts()["sales"] == 0
    # Publishing to a channel nobody has any more reaches nobody (a refresh in flight).
    assert hub.publish(Channel("sales", "acme"), Frame("{}", topic="sales")) == 0
