"""The bill of a whole chat answer that shows Switchyard's estimate (its provider reported no
usage: :mod:`switchyard.workers.modelproxy.shown_usage`) when its parts could not all reach
its caller, on a real nats-server: billed the estimate of what the provider answered, the
prompt and the answer, as the same answer with the provider's own count is billed that count
(docs/operations.md, "Upgrading"). Before e60ed9c the estimate was made from the answer the
job ended with, the error: a 499 ``caller_gone`` and a 504 ``deadline_exceeded`` were billed
the prompt alone, a 502 ``stream_interrupted`` nothing."""

from __future__ import annotations

import asyncio
import functools
import time
from typing import Any

import msgspec
import nats
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from switchyard.bus import headers as h
from switchyard.bus import part_acks
from switchyard.bus.envelope import Deadline, Envelope
from switchyard.errors import ApiError
from switchyard.schemas.openai import Usage
from switchyard.workers.modelproxy import billing, estimate, whole
from switchyard.workers.modelproxy.heartbeat import InFlight
from switchyard.workers.modelproxy.job import Job
from switchyard.workers.modelproxy.shown_usage import with_usage
from tests.support import until
from tests.test_part_acks_reconnect import _Server, server  # noqa: F401

pytestmark = pytest.mark.integration

REQUEST = b'{"model": "m", "messages": [{"role": "user", "content": "write at length"}]}'
TEXT = "word " * 600_000  # ~3 MB: an answer sent in parts (the server's max_payload: 1 MiB)
ANSWER = msgspec.json.encode(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 5,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": TEXT},
                "finish_reason": "stop",
            }
        ],
    }
)
COMPLETION = estimate.tokens(len(TEXT))
PROMPT = estimate.prompt_tokens(REQUEST)


def _job(proxy: NATS, reply: str, **headers: str) -> Job:
    stored = time.time_ns()
    msg = Msg(
        _client=None,  # type: ignore[arg-type]  # never used: nothing is acked here
        subject="llm.v1.dispatch.dep",
        reply=f"$JS.ACK.DISPATCH.mp.1.7.7.{stored}.0",
        data=REQUEST,
    )
    env = Envelope.decode(
        {
            h.REQUEST_ID: "r1",
            h.OP: "chat",
            h.PARTS_MAX: str(len(ANSWER) * 2),
            h.PARTS_ACK: "1",
            **headers,
        }
    ).with_(reply=reply)
    inflight = InFlight(reply=reply, msg=msg, last_sent=0.0, last_progress=0.0, out=proxy)
    return Job(msg=msg, env=env, deployment_id="dep", inflight=inflight)


def _shown(job: Job) -> bytes:
    """The answer as the handler makes it of one its provider gave without usage."""
    body = with_usage(job, ANSWER, 0)
    assert body != ANSWER  # (it shows the estimate)
    job.answer = body
    return body


def _bills(job: Job, status: int) -> None:
    """``job`` ended ``status`` is billed the estimate of the prompt and the whole answer, as
    the same job with its provider's count is billed that count."""
    assert job.status == status
    assert isinstance(job.answer, ApiError)
    assert job.answer.status == status
    found = billing.billed(job)
    assert found is not None, "not billed"
    usage, estimated = found
    assert estimated
    assert (usage.prompt_tokens, usage.completion_tokens) == (PROMPT, COMPLETION)
    job.usage = counted = Usage(prompt_tokens=7, completion_tokens=900, total_tokens=907)
    assert billing.billed(job) == (counted, False)


async def _caller(url: str, *, acks: bool = False) -> tuple[NATS, str, list[Msg]]:
    caller = await nats.connect(url, reconnect_time_wait=0.1, max_reconnect_attempts=-1)
    came: list[Msg] = []

    async def on_reply(msg: Msg) -> None:
        came.append(msg)
        if msg.reply and acks:
            await caller.publish(msg.reply, b"")

    inbox = caller.new_inbox()
    await caller.subscribe(inbox, cb=on_reply)
    await caller.flush()
    return caller, inbox, came


def _ended(came: list[Msg], code: bytes) -> bool:
    return len(came) >= 2 and not came[-1].data and code in came[-2].data


async def test_a_caller_that_stops_acknowledging_is_billed_the_answer(
    server: _Server,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """499 ``caller_gone``: its caller acknowledged no part (the wait made 1 s)."""
    monkeypatch.setattr(  # the real send, with a 1 s acknowledgement wait (not 10 s)
        whole, "send_acked_parts", functools.partial(part_acks.send_acked_parts, wait_s=1.0)
    )
    url = f"nats://127.0.0.1:{server.port}"
    proxy = await nats.connect(url)
    caller, inbox, came = await _caller(url)
    try:
        job = _job(proxy, inbox)
        await asyncio.wait_for(whole.send_final(proxy, job, _shown(job), end=True), 30)
        await until(lambda: _ended(came, b"caller_gone"))
    finally:
        await caller.close()
        await proxy.close()
    _bills(job, billing.CLIENT_CLOSED)


async def test_a_deadline_passed_while_parts_went_out_is_billed_the_answer(
    server: _Server,  # noqa: F811
) -> None:
    """504 ``deadline_exceeded``: the request's deadline came before its caller acknowledged
    its parts."""
    url = f"nats://127.0.0.1:{server.port}"
    proxy = await nats.connect(url)
    caller, inbox, came = await _caller(url)
    try:
        job = _job(proxy, inbox, **{h.DEADLINE: str(Deadline.after(1.0).unix_ms)})
        await asyncio.wait_for(whole.send_final(proxy, job, _shown(job), end=True), 30)
        await until(lambda: _ended(came, b"deadline_exceeded"))
    finally:
        await caller.close()
        await proxy.close()
    _bills(job, billing.DEADLINE_PASSED)


async def test_parts_lost_in_every_reconnect_are_billed_the_answer(
    server: _Server,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """502 ``stream_interrupted``: a reconnect under each of the replay's sends lost its
    parts (``PARTS_SENDS`` times)."""
    monkeypatch.setattr(
        whole, "send_acked_parts", functools.partial(part_acks.send_acked_parts, wait_s=1.0)
    )
    url = f"nats://127.0.0.1:{server.port}"
    proxy = await nats.connect(url, reconnect_time_wait=0.1, max_reconnect_attempts=-1)
    caller, inbox, came = await _caller(url)
    parts = asyncio.Event()
    seen = 0

    def parted() -> bool:  # a part came since the last look
        nonlocal seen
        fresh = any(m.reply for m in came[seen:])
        seen = len(came)
        return fresh

    async def reconnecting() -> Any:  # a reconnect under every send of the parts
        while True:
            await until(parted)
            parts.set()
            await server.stop()
            await server.start()
            await until(lambda: proxy.is_connected and caller.is_connected)
            await caller.flush()

    cuts = asyncio.create_task(reconnecting())
    try:
        job = _job(proxy, inbox)
        body = _shown(job)
        await asyncio.wait_for(whole.replay_final(proxy, job, body), 60)
        cuts.cancel()
        await until(lambda: _ended(came, b"stream_interrupted"))
    finally:
        cuts.cancel()
        await caller.close()
        await proxy.close()
    assert parts.is_set()
    _bills(job, 502)
