"""The runtime's JetStream helpers on a real nats-server: AckPublisher and Puller."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import pytest_asyncio
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig

from switchyard.errors import BusError
from switchyard.runtime.jetstream import AckPublisher, StreamRejected
from switchyard.runtime.puller import Puller
from tests.support import add_full_subject_stream, jetstream_server

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture(loop_scope="session")
async def js_nats(tmp_path: Path) -> AsyncIterator[NATS]:
    async with jetstream_server(tmp_path) as (nc, _):
        await add_full_subject_stream(nc)
        yield nc


async def _publish(publisher: AckPublisher, subject: str, msg_id: str) -> list[BusError | None]:
    outcomes: list[BusError | None] = []
    arrived = asyncio.Event()

    def done(error: BusError | None) -> None:
        outcomes.append(error)
        arrived.set()

    await publisher.publish_then(subject, b"x", {"Nats-Msg-Id": msg_id}, 0.5, done)
    await asyncio.wait_for(arrived.wait(), 5)
    await asyncio.sleep(0.6)  # past the timeout: a second call would have come by now
    return outcomes


async def test_publish_then_reports_stored_refused_and_unanswered_once_each(
    js_nats: NATS,
) -> None:
    publisher = AckPublisher(js_nats)
    await publisher.start()
    try:
        assert await _publish(publisher, "t.a", "one") == [None]
        info = await js_nats.jetstream().stream_info("T")
        assert info.state.messages == 1

        refused = await _publish(publisher, "t.a", "two")  # the subject is full: discard-new
        assert len(refused) == 1
        assert isinstance(refused[0], StreamRejected)

        unanswered = await _publish(publisher, "nowhere.a", "three")  # no stream listens
        assert len(unanswered) == 1
        assert isinstance(unanswered[0], BusError)
        assert not isinstance(unanswered[0], StreamRejected)
    finally:
        await publisher.stop()
    assert (await js_nats.jetstream().stream_info("T")).state.messages == 1


async def test_a_puller_asks_the_new_leader_when_its_consumer_gets_one(js_nats: NATS) -> None:
    """Pull requests live on the consumer's leader and can die with it unannounced: the
    LEADER_ELECTED advisory for its consumer makes the puller issue them again at once, where
    its watchdog would wait three idle heartbeats. (A single server elects no leaders; the
    test sends the advisory JetStream sends in a cluster.)"""
    js = js_nats.jetstream()
    await js.add_consumer("T", ConsumerConfig(durable_name="c", ack_policy=AckPolicy.EXPLICIT))
    pulls: list[bytes] = []

    async def note(msg: Msg) -> None:
        pulls.append(msg.data)

    spy = await js_nats.subscribe("$JS.API.CONSUMER.MSG.NEXT.T.c", cb=note)
    handled: list[bytes] = []

    async def handle(msg: Msg, _name: str) -> None:
        handled.append(msg.data)
        await msg.ack()

    puller = Puller(js_nats, "t", 4, handle, stream="T", consumer="c")  # watchdog: 30 s
    await puller.start()
    try:
        await _until(lambda: len(pulls) == 1)
        await js_nats.publish("$JS.EVENT.ADVISORY.CONSUMER.LEADER_ELECTED.T.other", b"{}")
        await js_nats.publish("$JS.EVENT.ADVISORY.CONSUMER.LEADER_ELECTED.T.c", b"{}")
        await _until(lambda: len(pulls) == 2)
        await asyncio.sleep(0.3)
        assert len(pulls) == 2  # another consumer's new leader changed nothing
        await js.publish("t.b", b"still served")
        await _until(lambda: handled == [b"still served"])
    finally:
        await puller.stop(2.0)
        await spy.unsubscribe()


async def _pullers_on(
    js_nats: NATS, *names: str, ack_wait: float = 60
) -> tuple[list[tuple[str, bytes]], list[Puller]]:
    """A consumer ``c`` on T, and one started puller per name, each acking what it handles
    into the returned list as (its name, the message)."""
    await js_nats.jetstream().add_consumer(
        "T", ConsumerConfig(durable_name="c", ack_policy=AckPolicy.EXPLICIT, ack_wait=ack_wait)
    )
    handled: list[tuple[str, bytes]] = []
    pullers = []
    for name in names:

        async def handle(msg: Msg, _deployment: str, name: str = name) -> None:
            handled.append((name, msg.data))
            await msg.ack()

        puller = Puller(js_nats, "t", 4, handle, stream="T", consumer="c")
        await puller.start()
        pullers.append(puller)
    return handled, pullers


async def _paused(js_nats: NATS, puller: Puller) -> None:
    """Pause ``puller`` and let its inbox's drain reach the server."""
    puller.pause()
    await asyncio.sleep(0.2)
    await js_nats.flush()


async def test_a_paused_puller_leaves_its_queue_to_the_others_then_resumes_carefully(
    js_nats: NATS,
) -> None:
    """A model-proxy that cannot fetch a deployment's key pauses pulling it, so the other
    model-proxies get its messages: pull requests it issued before stop delivering (their inbox
    is gone), and nothing it does meanwhile (a new consumer leader, a reconnect) pulls again.
    It resumes with the few messages asked for, then its whole capacity."""
    pulls: list[dict[str, int]] = []

    async def note(msg: Msg) -> None:
        pulls.append(json.loads(msg.data))

    spy = await js_nats.subscribe("$JS.API.CONSUMER.MSG.NEXT.T.c", cb=note)
    handled, (one, other) = await _pullers_on(js_nats, "one", "other")
    js = js_nats.jetstream()
    try:
        await _until(lambda: len(pulls) == 2)  # one pull request each, for 4 messages
        await _paused(js_nats, one)
        assert one.paused
        await js_nats.publish("$JS.EVENT.ADVISORY.CONSUMER.LEADER_ELECTED.T.c", b"{}")
        one.reset()  # as after a reconnect
        for n in range(10):
            await js.publish(f"t.{n}", b"%d" % n)
        await _until(lambda: len(handled) == 10)
        assert {name for name, _ in handled} == {"other"}
        await _paused(js_nats, other)
        pulled = len(pulls)

        await one.resume(first=1)
        await _until(lambda: len(pulls) == pulled + 1)
        assert pulls[-1]["batch"] == 1
        await js.publish("t.10", b"10")
        await _until(lambda: len(handled) == 11)
        await _until(lambda: len(pulls) == pulled + 2)
        assert pulls[-1]["batch"] == 4  # one message served: the whole capacity again
        for n in range(11, 14):
            await js.publish(f"t.{n}", b"%d" % n)
        await _until(lambda: len(handled) == 14)
        assert {name for name, _ in handled[10:]} == {"one"}
    finally:
        await one.stop(2.0)
        await other.stop(2.0)  # paused: it stops all the same
        await spy.unsubscribe()


async def test_a_message_on_its_way_when_a_pause_starts_is_handled_and_none_after_it(
    js_nats: NATS,
) -> None:
    """The pause starts while the server may be sending messages to the inbox (here: the
    handler publishes two and pauses at once, as a hand-back does). Such a message is handled
    as usual; or, when the server was sending it at the very moment it heard of the pause, it
    comes again after ``ack_wait`` (1 s here): never lost, never handled twice. A message
    stored once the pause is known goes to nobody, though pull requests were still out."""
    handled, (puller,) = await _pullers_on(js_nats, "one", ack_wait=1)
    js = js_nats.jetstream()

    async def round_of_four(n: int) -> None:
        before = len(handled)
        await js.publish(f"t.{n}.a", b"%d.a" % n)
        await _until(lambda: len(handled) > before)
        # The handler's work, inlined: pull requests for 3 more are out.
        await js_nats.publish(f"t.{n}.b", b"%d.b" % n)
        await js_nats.publish(f"t.{n}.c", b"%d.c" % n)
        await _paused(js_nats, puller)
        stored = await js.publish(f"t.{n}.d", b"%d.d" % n)
        await asyncio.sleep(0.2)
        assert (await js.consumer_info("T", "c")).delivered.stream_seq < stored.seq
        await puller.resume()
        await _until(lambda: len(handled) == before + 4)

    try:
        for n in range(5):
            await round_of_four(n)
        assert len({data for _, data in handled}) == len(handled) == 20  # each handled once
    finally:
        await puller.stop(2.0)


async def _until(done: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not done():
            await asyncio.sleep(0.02)
