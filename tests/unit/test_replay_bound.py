"""What a model-proxy keeps of a streamed answer for a replay is bounded (``.replay``): past
``REPLAY_MAX_BYTES`` the kept chunks are freed and the answer is no longer replayable, while
the count of chunks sent (the stream's ``final`` names it) and the measure of their content (the
estimate bills it) go on."""

from __future__ import annotations

import asyncio
import time

import pytest
from nats.aio.msg import Msg

from switchyard.bus.envelope import Envelope
from switchyard.workers.modelproxy import billing
from switchyard.workers.modelproxy.billing import CLIENT_CLOSED
from switchyard.workers.modelproxy.heartbeat import InFlight
from switchyard.workers.modelproxy.job import Job
from switchyard.workers.modelproxy.replay import (
    MEASURED_PER_CHUNK,
    REPLAY_MAX_BYTES,
    SETTLE_BATCH,
    SentChunks,
)

pytestmark = pytest.mark.unit

CHUNK = b"x" * 1024


def _job() -> Job:
    stored = time.time_ns()
    msg = Msg(
        _client=None,  # type: ignore[arg-type]  # never used: nothing is acked here
        subject="llm.v1.dispatch.dep",
        reply=f"$JS.ACK.DISPATCH.mp.1.7.7.{stored}.0",
        data=b'{"messages": []}',
    )
    env = Envelope(request_id="r1", op="chat", reply="_INBOX_edge.r1", key_hash="h", stream=True)
    return Job(
        msg=msg,
        env=env,
        deployment_id="dep",
        inflight=InFlight(reply=env.reply, msg=msg, last_sent=0.0, last_progress=0.0),
    )


def _replayable(chunks: SentChunks) -> bool:
    return chunks.complete  # read through a call: each read is a fresh one to the type checker


def test_a_streamed_answer_is_kept_for_a_replay_only_up_to_the_bound() -> None:
    job = _job()
    fits = REPLAY_MAX_BYTES // len(CHUNK)
    for _ in range(fits):
        job.chunks.append(CHUNK)
    assert _replayable(job.chunks)
    assert list(job.chunks) == [CHUNK] * fits  # replayable, whole
    for _ in range(5 * fits):  # a 25 MiB answer
        job.chunks.append(CHUNK)
    assert not _replayable(job.chunks)
    assert job.chunks.kept_bytes == 0  # freed as later chunks pass, not held to the end
    assert list(job.chunks) == []
    assert len(job.chunks) == 6 * fits  # still counted: the final names it


def test_an_answer_past_the_bound_is_still_billed_by_what_it_delivered() -> None:
    job = _job()
    job.called, job.status = True, CLIENT_CLOSED
    for _ in range(REPLAY_MAX_BYTES // len(CHUNK) + 10):
        job.chunks.append(CHUNK)
    found = billing.billed(job)
    assert found is not None
    usage, estimated = found
    assert estimated
    # Chunks that do not read as chat chunks count their bytes (tests/unit/test_stream_estimate.py
    # has real ones).
    assert usage.completion_tokens == len(job.chunks) * len(CHUNK) // 4


def test_a_small_bound_keeps_nothing_past_it() -> None:
    kept = SentChunks(limit=10)
    kept.append(b"12345")
    kept.append(b"67890")
    assert _replayable(kept)
    assert kept.kept_bytes == 10
    kept.append(b"!")
    assert not _replayable(kept)
    assert len(kept) == 3


def test_crossing_the_bound_measures_no_more_than_a_few_chunks() -> None:
    """Measuring every kept chunk when an answer passed the bound held the event loop 50-120 ms
    (a review): the crossing and each later chunk measure a few at most, and every chunk is
    measured once by the end."""
    calls: list[bytes] = []

    def size(payload: bytes) -> int:
        calls.append(payload)
        return len(payload)

    kept = SentChunks(limit=1000, size=size)
    for _ in range(100):
        kept.append(b"x" * 10)
    assert calls == []  # within the bound: measured only when the bill asks
    kept.append(b"y" * 10)  # past it
    assert not _replayable(kept)
    assert len(calls) <= 1 + MEASURED_PER_CHUNK
    for _ in range(5):
        before = len(calls)
        kept.append(b"z" * 10)
        assert len(calls) - before <= 1 + MEASURED_PER_CHUNK
    assert kept.kept_bytes < 1000  # the oldest freed as they are measured
    assert kept.generated() == 106 * 10
    assert len(calls) == 106  # each chunk measured once


async def test_settle_measures_in_batches_letting_the_loop_run() -> None:
    turns = 0
    stop = False

    async def other() -> None:
        nonlocal turns
        while not stop:
            turns += 1
            await asyncio.sleep(0)

    count = 5 * SETTLE_BATCH
    for limit in (10**9, 2 * count - 1):  # within the bound, and past it on the last chunk
        kept = SentChunks(limit=limit, size=len)
        for _ in range(count):
            kept.append(b"ab")
        stop = False
        task = asyncio.create_task(other())
        await asyncio.sleep(0)
        turns = 0
        await kept.settle()
        stop = True
        await task
        assert turns >= 4  # the loop ran between batches
        assert kept.generated() == 2 * count
