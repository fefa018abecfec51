"""Accounting bills each usage batch once, by its place in the USAGE stream, on a real
nats-server and a real Valkey (with the role ACLs ``switchyard up`` writes).

A batch JetStream delivers again is skipped even after its events' ids were forgotten (as after
a long accounting outage: they are kept 15 minutes); a stream deleted and created again, whose
sequences start at 1 again, has its batches billed; and no per-batch key is written any more.
The accounting service's own message handler does the work, fed real deliveries.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.client import JetStreamContext
from redis.asyncio import Redis

from switchyard.bus import subjects
from switchyard.config import Settings
from switchyard.limits.store import connect_redis
from switchyard.runtime.definitions import usage_stream_config
from switchyard.runtime.metrics import Metrics
from switchyard.runtime.worker import Process
from switchyard.workers.accounting.service import Accounting
from switchyard.workers.accounting.stream import UsageStream, micros, place_of
from tests.billing import day_counters
from tests.billing import publish_usage as _publish
from tests.support import jetstream_server, valkey_server, write_settings

pytestmark = pytest.mark.integration

DAY_S = 86400


@dataclass
class Rig:
    nc: NATS
    settings: Settings
    ops: Redis
    accounting: Accounting


@pytest_asyncio.fixture(loop_scope="session")
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    settings, _ = write_settings(tmp_path / "home")
    async with valkey_server(settings), jetstream_server(tmp_path / "nats") as (nc, _server):
        await nc.jetstream().add_stream(usage_stream_config(settings))
        ops = connect_redis(settings, "ops")
        accounting = Accounting(nc, settings, Process(instance="t", metrics=Metrics("accounting")))
        try:
            yield Rig(nc, settings, ops, accounting)
        finally:
            await accounting.redis.aclose()
            await ops.aclose()


async def _deliveries(
    nc: NATS, name: str, ack_wait: float = 30.0
) -> JetStreamContext.PullSubscription:
    """A pull subscription on a consumer of its own (the service's handler acks for it)."""
    js = nc.jetstream()
    await js.add_consumer(
        subjects.USAGE_STREAM,
        ConsumerConfig(durable_name=name, ack_policy=AckPolicy.EXPLICIT, ack_wait=ack_wait),
    )
    return await js.pull_subscribe_bind(name, subjects.USAGE_STREAM)


async def _next(subscription: JetStreamContext.PullSubscription) -> Msg:
    msgs = await subscription.fetch(1, timeout=10)
    assert len(msgs) == 1
    return msgs[0]


async def _billed(ops: Redis, key_id: str) -> list[int]:
    fields = await day_counters(ops, key_id)
    return [fields.get(f, 0) for f in ("requests", "prompt_tokens", "completion_tokens")]


async def _keys(ops: Redis, pattern: str) -> list[str]:
    return sorted(
        [(k.decode() if isinstance(k, bytes) else k) async for k in ops.scan_iter(pattern)]
    )


async def _forget_events(ops: Redis) -> None:
    """What 15 minutes do: the events' ids are no longer remembered."""
    for key in await _keys(ops, "sy:usage:once:*"):
        await ops.delete(key)


async def test_a_redelivered_batch_is_billed_once_after_its_events_are_forgotten(
    rig: Rig,
) -> None:
    seq = await _publish(rig.nc, "batch-a", "key_redelivered", "req-a.0")
    subscription = await _deliveries(rig.nc, "probe", ack_wait=1.0)
    first = await _next(subscription)
    # Not acknowledged within the ack wait: JetStream delivers the same message again, as it
    # does when accounting applied a batch and died (or lost the ack) before acknowledging.
    again = await _next(subscription)
    assert again.metadata.num_delivered == 2
    assert again.metadata.sequence.stream == first.metadata.sequence.stream == seq

    await rig.accounting.handle(first, "usage")
    assert await _billed(rig.ops, "key_redelivered") == [1, 10, 5]
    await _forget_events(rig.ops)
    await rig.accounting.handle(again, "usage")
    assert await _billed(rig.ops, "key_redelivered") == [1, 10, 5]

    assert await _keys(rig.ops, "sy:usage:seen:*") == []
    chunks = await _keys(rig.ops, "sy:usage:applied:*")
    assert len(chunks) == 1
    # The stream keeps usage 7 days: the chunk outlives that by a day, not a fortnight.
    assert 7 * DAY_S < await rig.ops.ttl(chunks[0]) <= 8 * DAY_S
    assert await rig.ops.getbit(chunks[0], seq) == 1


async def test_the_place_read_from_a_real_delivery_is_the_one_nats_py_reads(rig: Rig) -> None:
    """Accounting reads a batch's stream sequence and storage time from the reply subject
    (cheaper than msg.metadata): this server's subject form must give the same numbers."""
    seq = await _publish(rig.nc, "batch-p", "key_place", "req-p.0")
    delivered = await _next(await _deliveries(rig.nc, "probe"))
    place = place_of(delivered.reply)
    assert place is not None
    assert place.seq == delivered.metadata.sequence.stream == seq
    assert 0 <= micros(delivered.metadata.timestamp) - place.stored_us <= 1  # float rounding


async def test_a_recreated_streams_batches_are_billed_though_their_sequences_repeat(
    rig: Rig,
) -> None:
    js = rig.nc.jetstream()
    old_seq = await _publish(rig.nc, "batch-old", "key_recreated", "req-old.0")
    await rig.accounting.handle(await _next(await _deliveries(rig.nc, "probe")), "usage")
    assert await _billed(rig.ops, "key_recreated") == [1, 10, 5]

    # Deleted and created again while accounting runs: sequences start at 1 again.
    await js.delete_stream(subjects.USAGE_STREAM)
    await js.add_stream(usage_stream_config(rig.settings))
    new_seq = await _publish(rig.nc, "batch-new", "key_recreated", "req-new.0")
    assert new_seq == old_seq == 1
    subscription = await _deliveries(rig.nc, "probe", ack_wait=1.0)
    fresh = await _next(subscription)
    again = await _next(subscription)
    assert again.metadata.sequence.stream == new_seq
    await rig.accounting.handle(fresh, "usage")
    assert await _billed(rig.ops, "key_recreated") == [2, 20, 10]

    # The new stream's batch is remembered in its own chunk: its redelivery is skipped.
    await _forget_events(rig.ops)
    await rig.accounting.handle(again, "usage")
    assert await _billed(rig.ops, "key_recreated") == [2, 20, 10]
    assert len(await _keys(rig.ops, "sy:usage:applied:*")) == 2
    assert await _keys(rig.ops, "sy:usage:seen:*") == []


async def test_a_deleted_streams_batch_handled_late_leaves_the_new_streams_sequence_alone(
    rig: Rig,
) -> None:
    js = rig.nc.jetstream()
    await _publish(rig.nc, "batch-late", "key_late", "req-late.0")
    late = await _next(await _deliveries(rig.nc, "probe"))
    # Its stream is deleted and created again before accounting gets to the batch.
    await js.delete_stream(subjects.USAGE_STREAM)
    await js.add_stream(usage_stream_config(rig.settings))
    new_seq = await _publish(rig.nc, "batch-next", "key_late", "req-next.0")
    assert new_seq == late.metadata.sequence.stream == 1
    fresh = await _next(await _deliveries(rig.nc, "probe"))

    await rig.accounting.handle(late, "usage")  # billed, guarded by its event's id alone
    assert await _billed(rig.ops, "key_late") == [1, 10, 5]
    assert await _keys(rig.ops, "sy:usage:applied:*") == []
    await rig.accounting.handle(fresh, "usage")  # the new stream's sequence 1 is its own
    assert await _billed(rig.ops, "key_late") == [2, 20, 10]
    assert await _keys(rig.ops, "sy:usage:seen:*") == []


async def test_a_batch_redelivered_after_nats_and_accounting_restarted_is_skipped(
    tmp_path: Path,
) -> None:
    # The stream's creation time names its bits: it must survive a server restart (it does:
    # nats-server keeps it with the stream), or every restart would re-bill what was unacked.
    settings, _ = write_settings(tmp_path / "home")
    store = tmp_path / "nats"
    async with valkey_server(settings):
        ops = connect_redis(settings, "ops")
        try:
            async with jetstream_server(store) as (nc, _server):
                await nc.jetstream().add_stream(usage_stream_config(settings))
                await _publish(nc, "batch-r", "key_restart", "req-r.0")
                first = await _next(await _deliveries(nc, "probe"))
                # A second consumer stands for the delivery whose acknowledgement never came:
                # it delivers the same stream message again after the restart.
                await _deliveries(nc, "other")
                before = Accounting(nc, settings, Process(instance="a", metrics=Metrics("a")))
                try:
                    await before.handle(first, "usage")
                finally:
                    await before.redis.aclose()
            async with jetstream_server(store) as (nc, _server):
                again = await _next(
                    await nc.jetstream().pull_subscribe_bind("other", subjects.USAGE_STREAM)
                )
                after = Accounting(nc, settings, Process(instance="b", metrics=Metrics("b")))
                try:
                    await _forget_events(ops)
                    await after.handle(again, "usage")
                finally:
                    await after.redis.aclose()
            assert again.metadata.sequence.stream == first.metadata.sequence.stream
            assert await _billed(ops, "key_restart") == [1, 10, 5]
            assert await _keys(ops, "sy:usage:seen:*") == []
        finally:
            await ops.aclose()


async def test_a_stream_that_does_not_answer_leaves_billing_to_the_events_ids(rig: Rig) -> None:
    """An upgraded stack whose NATS config predates accounting's question (or a stream that
    will not say what it is) still bills, once per event, rather than stalling every budget."""
    # The real server's answer for a stream it does not know stands for a refused question.
    rig.accounting.usage_stream = UsageStream.over(rig.nc, "NO_SUCH_STREAM", 2.0)
    await _publish(rig.nc, "batch-u", "key_unplaced", "req-u.0")
    subscription = await _deliveries(rig.nc, "probe", ack_wait=1.0)
    first = await _next(subscription)
    again = await _next(subscription)  # the same message, delivered again
    await rig.accounting.handle(first, "usage")
    await rig.accounting.handle(again, "usage")
    assert await _billed(rig.ops, "key_unplaced") == [1, 10, 5]
    assert await _keys(rig.ops, "sy:usage:applied:*") == []
    info = await rig.nc.jetstream().consumer_info(subjects.USAGE_STREAM, "probe")
    assert info.num_ack_pending == 0  # acknowledged, not left to be redelivered for ever


async def test_a_stopped_copy_of_an_answered_request_is_not_billed_again(rig: Rig) -> None:
    """The platform ran one request twice (redelivered while a frozen model-proxy still served
    it, or re-sent in a NATS failover): one copy answered, and the other was stopped because
    its caller left with that answer, or by the deadline. One answer: billed once. A call
    stopped before its request's answer was billed (a caller's own re-send comes after the
    stop) is billed beside the answer, as before: two provider calls."""
    subscription = await _deliveries(rig.nc, "probe")
    await _publish(rig.nc, "b-answer", "key_dup", "u1:x:answered")
    await _publish(rig.nc, "b-left", "key_dup", "u1:x:dep-a:left", status=499)
    await _publish(rig.nc, "b-late", "key_dup", "u1:x:dep-a,dep-b:late", status=504)
    for _ in range(3):
        await rig.accounting.handle(await _next(subscription), "usage")
    assert await _billed(rig.ops, "key_dup") == [1, 10, 5]

    await _publish(rig.nc, "b-left-2", "key_resent", "u2:dep-a:left", status=499)
    await _publish(rig.nc, "b-answer-2", "key_resent", "u2:answered")
    for _ in range(2):
        await rig.accounting.handle(await _next(subscription), "usage")
    assert await _billed(rig.ops, "key_resent") == [2, 20, 10]
    # Another request's answer leaves this one's stopped call billed.
    await _publish(rig.nc, "b-left-3", "key_other", "u3:dep-a:left", status=499)
    await rig.accounting.handle(await _next(subscription), "usage")
    assert await _billed(rig.ops, "key_other") == [1, 10, 5]
