"""The usage an OpenAI answer without the provider's shows (``.shown_usage``): the estimate it
is billed, in its body or in a usage chunk, marked as an estimate; the rest passed on as
written."""

from __future__ import annotations

import json
import time

import pytest
from nats.aio.msg import Msg

from switchyard.bus.envelope import Envelope
from switchyard.workers.modelproxy import billing, estimate
from switchyard.workers.modelproxy.heartbeat import InFlight
from switchyard.workers.modelproxy.job import Job
from switchyard.workers.modelproxy.shown_usage import send_usage_chunk, with_usage

pytestmark = pytest.mark.unit

REQUEST = b'{"model": "m", "messages": [{"role": "user", "content": "one two three"}]}'
ANSWER = (
    b'{"id": "chatcmpl-1", "object": "chat.completion", "created": 5, "model": "m",'
    b' "x": 1.10000000000000000001, "choices": [{"index": 0, "message": {"role": "assistant",'
    b' "content": "echo: one two three"}, "finish_reason": "stop"}], "usage": null}'
)


def _job(op: str = "chat", *, stream: bool = False) -> Job:
    stored = time.time_ns()
    msg = Msg(
        _client=None,  # type: ignore[arg-type]  # never used: nothing is acked here
        subject="llm.v1.dispatch.dep",
        reply=f"$JS.ACK.DISPATCH.mp.1.7.7.{stored}.0",
        data=REQUEST,
    )
    env = Envelope(request_id="r1", op=op, reply="_INBOX.r1", stream=stream, alias="asked")
    return Job(
        msg=msg,
        env=env,
        deployment_id="dep",
        inflight=InFlight(reply=env.reply, msg=msg, last_sent=0.0, last_progress=0.0),
    )


def test_a_whole_answer_shows_the_estimate_it_is_billed() -> None:
    job = _job()
    shown = with_usage(job, ANSWER, 0)
    doc = json.loads(shown)
    completion = estimate.tokens(len("echo: one two three"))
    prompt = estimate.prompt_tokens(REQUEST)
    assert doc["usage"] == {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "estimated": True,
    }
    assert b'"x":1.10000000000000000001' in shown  # every other value as written
    assert list(doc)[:4] == ["id", "object", "created", "model"]
    job.answer = shown
    usage, estimated = billing.billed(job) or (None, False)
    assert estimated
    assert usage is not None
    assert usage.wire() == {k: v for k, v in doc["usage"].items() if k != "estimated"}


def test_an_answer_it_cannot_show_usage_in_is_passed_on_as_it_came() -> None:
    without = ANSWER.replace(b', "usage": null', b"")
    assert with_usage(_job(), without, len(without) + 10) == without  # it would not fit
    assert with_usage(_job(), b"[1, 2]", 0) == b"[1, 2]"  # no object
    embeddings = b'{"object": "list", "data": []}'
    job = _job("embed")
    assert with_usage(job, embeddings, 0) == embeddings  # not chat: no usage of ours
    assert job.usage is None


async def test_a_stream_gets_one_usage_chunk_named_as_its_last() -> None:
    job = _job(stream=True)
    last = b'{"id": "c-9", "object": "chat.completion.chunk", "created": 7, "model": "up",'
    last += b' "system_fingerprint": "fp", "choices": [{"index": 0, "delta": {"content": "hey"}}]}'
    job.chunks.append(last)
    sent: list[tuple[int, bytes]] = []

    async def send(j: Job, seq: int, payload: bytes) -> None:
        sent.append((seq, payload))

    await send_usage_chunk(job, last, send)
    [(seq, payload)] = sent
    assert seq == 1
    assert len(job.chunks) == 2  # kept for a replay, counted by the final
    assert list(job.chunks)[-1] == payload
    chunk = json.loads(payload)
    assert chunk["id"] == "c-9"
    assert chunk["model"] == "up"
    assert chunk["created"] == 7
    assert chunk["system_fingerprint"] == "fp"
    assert chunk["choices"] == []
    assert chunk["usage"]["completion_tokens"] == 1  # "hey"
    assert chunk["usage"]["estimated"] is True
    assert job.usage is not None
    assert job.usage.total_tokens == chunk["usage"]["total_tokens"]


async def test_a_stream_with_nothing_to_name_it_by_gets_names_of_its_own() -> None:
    job = _job("complete", stream=True)
    sent: list[bytes] = []

    async def send(j: Job, seq: int, payload: bytes) -> None:
        sent.append(payload)

    await send_usage_chunk(job, None, send)
    chunk = json.loads(sent[0])
    assert chunk["id"] == "cmpl-r1"
    assert chunk["object"] == "text_completion"
    assert chunk["model"] == "asked"
    assert chunk["usage"]["completion_tokens"] == 0


def test_an_answer_nested_past_the_recursion_limit_is_passed_on_as_it_came() -> None:
    """Its estimate counts its bytes, as for one that is no JSON; before, measuring it raised
    RecursionError inside the provider call: the client got 500 for an answer it was due."""
    deep = b"[" * 100_000 + b"]" * 100_000
    body = ANSWER.replace(b'"x": 1.10000000000000000001', b'"x": ' + deep)
    job = _job()
    assert with_usage(job, body, 0) == body
    assert job.usage is not None
    assert job.usage.completion_tokens == estimate.tokens(len(body))
    assert estimate.chunk_size("chat")(body) == len(body)  # a stream's chunk: the same


@pytest.mark.parametrize(
    "written",
    [
        b'{"prompt_tokens": 5, "completion_tokens": null, "total_tokens": 5}',
        b'{"prompt_tokens": 5.0, "completion_tokens": 3, "total_tokens": 8}',
        b'"n/a"',
    ],
)
def test_a_usage_of_the_providers_that_does_not_read_is_kept_as_written(written: bytes) -> None:
    """Only an answer without usage (absent or null) shows ours: before, a provider's own
    ``usage`` that did not parse as a count was replaced by the estimate."""
    body = ANSWER.replace(b'"usage": null', b'"usage": ' + written)
    job = _job()
    assert with_usage(job, body, 0) == body
    assert job.usage is not None  # billed the estimate all the same (Sy-Usage says it)


async def test_a_stream_whose_provider_sent_a_usage_chunk_gets_no_second_one() -> None:
    """A usage chunk of the provider's that does not read as a count (``job.usage`` stays
    None) is its stream's usage chunk: before, ours followed it, and the client read two."""
    job = _job(stream=True)
    last = b'{"id": "c-9", "object": "chat.completion.chunk", "created": 7, "model": "up",'
    last += b' "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": null}}'
    job.chunks.append(last)
    sent: list[bytes] = []

    async def send(j: Job, seq: int, payload: bytes) -> None:
        sent.append(payload)

    await send_usage_chunk(job, last, send)
    assert sent == []
    assert len(job.chunks) == 1
    assert job.usage is None  # billed the estimate of its chunks, as before
    null = last.replace(b'{"prompt_tokens": 5, "completion_tokens": null}', b"null")
    await send_usage_chunk(job, null, send)  # a chunk's ``"usage": null`` is none
    assert len(sent) == 1
