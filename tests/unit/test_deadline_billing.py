"""A call its deadline stopped while the provider worked is billed like one whose caller left:
an estimate, under an event id of its own. A failure that delivered nothing is not. (Which
calls are billed at all, only those whose provider was called, the handler decides.)"""

from __future__ import annotations

import time

import pytest
from nats.aio.msg import Msg

from switchyard.bus.envelope import Envelope
from switchyard.errors import DeadlineExceeded, ProviderError
from switchyard.workers.modelproxy import billing
from switchyard.workers.modelproxy.heartbeat import InFlight
from switchyard.workers.modelproxy.job import Job

pytestmark = pytest.mark.unit

DEPLOYMENT = "fake.slow"
BODY = b'{"model": "m", "messages": [{"role": "user", "content": "a prompt of some size"}]}'


def _job(status: int) -> Job:
    stored = time.time_ns() - 1_000_000
    msg = Msg(
        _client=None,  # type: ignore[arg-type]  # never used: nothing is acked here
        subject=f"llm.v1.dispatch.{DEPLOYMENT}",
        reply=f"$JS.ACK.DISPATCH.mp.1.7.7.{stored}.0",
        data=BODY,
    )
    env = Envelope(request_id="r1", op="chat", reply="_INBOX_edge.r1", key_hash="h", tried=("a.b",))
    job = Job(
        msg=msg,
        env=env,
        deployment_id=DEPLOYMENT,
        inflight=InFlight(reply=env.reply, msg=msg, last_sent=0.0, last_progress=0.0),
    )
    job.called, job.status = True, status
    return job


def test_a_call_stopped_by_its_deadline_is_billed_an_estimate_under_its_own_id() -> None:
    job = _job(DeadlineExceeded.status)
    found = billing.billed(job)
    assert found is not None
    usage, estimated = found
    assert estimated
    assert usage.prompt_tokens == len(BODY) // 4
    assert usage.completion_tokens == 0
    assert billing.event_id(job) == "r1:a.b:late"
    # Apart from a call stopped because its caller left, and from an answer; a provider
    # failure that delivered nothing is still not billed.
    assert billing.event_id(_job(billing.CLIENT_CLOSED)) == "r1:a.b:left"
    assert billing.event_id(_job(200)) == "r1:answered"
    assert billing.billed(_job(ProviderError.status)) is None  # nothing delivered


def test_an_answer_is_billed_once_whichever_hop_gave_it() -> None:
    """A stalled model-proxy finishes the first hop's copy while the redelivered copy failed
    there and was answered by the next deployment: two answers to one caller, billed once.
    A failed hop that delivered part of an answer is still billed apart from the answer."""
    first, rerouted = _job(200), _job(200)
    first.env = Envelope(request_id="r1", op="chat", reply="_INBOX_edge.r1", key_hash="h")
    assert billing.event_id(first) == billing.event_id(rerouted)
    cut = _job(ProviderError.status)
    cut.chunks.append(b"{}")
    assert billing.billed(cut) is not None
    assert billing.event_id(cut) not in (billing.event_id(first), billing.event_id(rerouted))
