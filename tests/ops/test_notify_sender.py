"""The notifier against real receivers (tests/ops/receivers.py): an HTTP server for json://
and an SMTP server for mailto://; real clock, Apprise in real worker threads.

Retry waits are shortened (``FAST``) so that a retried delivery takes tens of milliseconds.
"""

from __future__ import annotations

import email
import random

import trio

from broadcaster.ops.notify import events
from broadcaster.ops.notify.counts import Outcome
from broadcaster.ops.notify.events import EventName
from broadcaster.ops.notify.sender import QUEUE_CAPACITY, SENDING_WORKERS, Notifier, RetryPolicy
from tests.ops.receivers import JsonReceiver, SmtpReceiver
from tests.wsclient import eventually

FAST = RetryPolicy(attempts=4, base_delay_s=0.02, max_delay_s=0.1)


async def _receiver(nursery: trio.Nursery, **options: object) -> JsonReceiver:
    receiver = JsonReceiver(**options)  # type: ignore[arg-type]
    await nursery.start(receiver.serve)
    return receiver


async def _notifier(nursery: trio.Nursery, *urls: str, **options: object) -> Notifier:
    notifier = Notifier(urls, rng=random.Random(1), **options)  # type: ignore[arg-type]
    await nursery.start(notifier.serve)
    return notifier


async def test_json_receiver_gets_title_body_and_type(nursery: trio.Nursery) -> None:
    receiver = await _receiver(nursery)
    notifier = await _notifier(nursery, receiver.url(), retry=FAST)

    notifier.notify(events.database_down(3, "InfluxDB at x unreachable: connection refused"))

    await receiver.wait_until(accepted=1)
    [sent] = receiver.accepted
    assert sent["title"] == "database_down: InfluxDB unreachable for 3 queries"
    assert sent["type"] == "failure"
    lines = dict(line.split(": ", 1) for line in sent["message"].splitlines())
    assert lines["event"] == "database_down"
    assert lines["node"] == events.node_id()
    assert lines["time"].endswith("Z")
    assert lines["consecutive_failures"] == "3"
    assert lines["last_error"] == "InfluxDB at x unreachable: connection refused"
    await eventually(lambda: notifier.counts.get(EventName.DATABASE_DOWN, Outcome.SENT) == 1)


async def test_every_notification_names_the_node_by_its_node_id(nursery: trio.Nursery) -> None:
    """The service passes its node id (``--node-id``, as in welcome.nodeId and the cluster
    status) so that a notification names the same node."""
    receiver = await _receiver(nursery)
    notifier = await _notifier(nursery, receiver.url(), retry=FAST, node="web-1")

    notifier.notify(events.service_started("ws://x", "http://x"))

    await receiver.wait_until(accepted=1)
    lines = dict(line.split(": ", 1) for line in receiver.accepted[0]["message"].splitlines())
    assert lines["node"] == "web-1"


async def test_a_receiver_that_fails_twice_gets_one_notification(nursery: trio.Nursery) -> None:
    receiver = await _receiver(nursery, statuses=[500, 500])
    notifier = await _notifier(nursery, receiver.url(), retry=FAST)

    notifier.notify(events.service_started("ws://x", "http://x"))

    await receiver.wait_until(accepted=1)
    assert receiver.requests == 3
    assert receiver.titles() == ["service_started: broadcaster started"]
    await eventually(lambda: notifier.counts.get(EventName.SERVICE_STARTED, Outcome.SENT) == 1)
    assert notifier.counts.get(EventName.SERVICE_STARTED, Outcome.FAILED) == 0


async def test_a_receiver_that_always_fails_is_counted_failed_after_every_attempt(
    nursery: trio.Nursery,
) -> None:
    receiver = await _receiver(nursery, statuses=[500] * 10)
    notifier = await _notifier(nursery, receiver.url(), retry=FAST)

    notifier.notify(events.clients_gone(300))

    await eventually(lambda: notifier.counts.get(EventName.CLIENTS_GONE, Outcome.FAILED) == 1)
    assert receiver.requests == FAST.attempts
    assert notifier.counts.get(EventName.CLIENTS_GONE, Outcome.SENT) == 0


async def test_a_receiver_that_never_answers_holds_an_attempt_only_until_its_timeout(
    nursery: trio.Nursery,
) -> None:
    receiver = await _receiver(nursery, hang=True)
    # rto: Apprise's own read timeout, longer than ours, so that it is ours that ends the wait.
    notifier = await _notifier(
        nursery,
        receiver.url(rto="60"),
        retry=RetryPolicy(attempts=2, base_delay_s=0.02),
        attempt_timeout_s=0.3,
    )
    started = trio.current_time()

    notifier.notify(events.heartbeat_failures(60, 50, 15))

    await eventually(lambda: notifier.counts.get(EventName.HEARTBEAT_FAILURES, Outcome.FAILED) == 1)
    # Two abandoned attempts of 0.3 s and one short wait between them.
    assert trio.current_time() - started < 1.5
    assert receiver.requests == 2


async def test_a_full_queue_drops_the_oldest_and_counts_it(nursery: trio.Nursery) -> None:
    receiver = await _receiver(nursery, hang=True)
    notifier = await _notifier(nursery, receiver.url(rto="60"), attempt_timeout_s=60)
    for _ in range(SENDING_WORKERS):
        notifier.notify(events.database_down(3, "x"))
    await receiver.wait_until(requests=SENDING_WORKERS)  # every worker is now stuck in one

    for _ in range(QUEUE_CAPACITY):
        notifier.notify(events.heartbeat_failures(60, 50, 15))
    notifier.notify(events.database_recovered(12.0, 5))

    assert notifier.counts.get(EventName.HEARTBEAT_FAILURES, Outcome.DROPPED) == 1
    assert notifier.counts.get(EventName.DATABASE_RECOVERED, Outcome.DROPPED) == 0


async def test_what_is_left_when_the_sender_is_cancelled_is_counted_dropped() -> None:
    async with trio.open_nursery() as nursery:
        receiver = await _receiver(nursery, hang=True)
        notifier = await _notifier(nursery, receiver.url(rto="60"), attempt_timeout_s=60)
        for _ in range(SENDING_WORKERS + 3):
            notifier.notify(events.service_stopping("SIGTERM", 7))
        await receiver.wait_until(requests=SENDING_WORKERS)
        with trio.move_on_after(0.2):
            await notifier.finish()  # bounded by the caller, as the service does
        nursery.cancel_scope.cancel()

    dropped = notifier.counts.get(EventName.SERVICE_STOPPING, Outcome.DROPPED)
    assert dropped == SENDING_WORKERS + 3


async def test_mailto_to_a_real_smtp_server(nursery: trio.Nursery) -> None:
    with SmtpReceiver() as smtp:
        notifier = await _notifier(nursery, smtp.url(), retry=FAST)

        notifier.notify(events.service_stopping("SIGTERM", 12))

        await smtp.wait_until(1)
        # The sending thread counts once the server's reply is read.
        await eventually(lambda: notifier.counts.get(EventName.SERVICE_STOPPING, Outcome.SENT) == 1)
    [envelope] = smtp.messages
    assert envelope.rcpt_tos == ["ops@example.com"]
    assert isinstance(envelope.content, bytes)
    message = email.message_from_bytes(envelope.content)
    assert message["Subject"] == (
        "service_stopping: broadcaster stopping (SIGTERM), 12 clients told to reconnect"
    )
    text = next(part for part in message.walk() if part.get_content_type() == "text/plain")
    body = text.get_payload(decode=True)
    assert isinstance(body, bytes)
    assert "clients_told: 12" in body.decode()


async def test_several_urls_each_get_the_event(nursery: trio.Nursery) -> None:
    first = await _receiver(nursery)
    second = await _receiver(nursery, statuses=[500])
    notifier = await _notifier(nursery, first.url(), second.url(), retry=FAST)

    notifier.notify(events.broker_down("redis://r:6379", "timeout"))

    await first.wait_until(accepted=1)
    await second.wait_until(accepted=1)
    assert first.titles() == second.titles() == ["broker_down: broker redis://r:6379 unreachable"]
    await eventually(lambda: notifier.counts.get(EventName.BROKER_DOWN, Outcome.SENT) == 2)
