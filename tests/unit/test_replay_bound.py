"""What a model-proxy keeps of a streamed answer for a replay is bounded (``.replay``): past
``REPLAY_MAX_BYTES`` the kept chunks are freed and the answer is no longer replayable, while
the count of chunks sent (the stream's ``final`` names it) and the measure of their content (the
estimate bills it) go on."""

from __future__ import annotations

import time

import pytest
from nats.aio.msg import Msg

from switchyard.bus.envelope import Envelope
from switchyard.workers.modelproxy import billing
from switchyard.workers.modelproxy.billing import CLIENT_CLOSED
from switchyard.workers.modelproxy.heartbeat import InFlight
from switchyard.workers.modelproxy.job import Job
from switchyard.workers.modelproxy.replay import REPLAY_MAX_BYTES, SentChunks

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
    assert job.chunks.kept_bytes == 0  # freed at once, not held to the end of the stream
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
