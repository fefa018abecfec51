"""The runtime's JetStream helpers on a real nats-server: AckPublisher and Puller."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import pytest_asyncio
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DiscardPolicy, StreamConfig

from switchyard.errors import BusError
from switchyard.runtime.jetstream import AckPublisher, StreamRejected
from switchyard.runtime.puller import Puller
from tests.support import jetstream_server

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture(loop_scope="session")
async def js_nats(tmp_path: Path) -> AsyncIterator[NATS]:
    async with jetstream_server(tmp_path) as (nc, _):
        await nc.jetstream().add_stream(
            StreamConfig(
                name="T",
                subjects=["t.>"],
                max_msgs_per_subject=1,
                discard=DiscardPolicy.NEW,
                discard_new_per_subject=True,
            )
        )
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


async def _until(done: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not done():
            await asyncio.sleep(0.02)
