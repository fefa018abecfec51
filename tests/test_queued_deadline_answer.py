"""A request whose deadline passes while it waits for a busy deployment gets its 504.

One deployment taking one call at a time (concurrency 1) whose provider takes 10 s; the stack's
default deadline is 2 s. A first request (its own 30 s Sy-Deadline) holds the slot, three more
wait in dispatch until the feeder marks the deployment held, and the next request, sent with no
Sy-Deadline, waits in HOLD. Its deadline passes there: the feeder dropped it from HOLD and
nobody answered a bus caller (it timed out, 30 s later); now the feeder answers its 504 within
a tick of the deadline, naming the limit. An HTTP caller in the same place gets the edge's own
504 when its X-Request-Timeout passes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import msgspec
import pytest
import pytest_asyncio

from switchyard.bus import headers as h
from switchyard.bus import replies, subjects
from switchyard.schemas.routing import deployment_id
from switchyard.schemas.scheduling import SCHED_DECODER
from tests.stacks import Stack, start_stack
from tests.support import bus_answer
from tests.upstream import FakeOpenAI

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DEFAULT_S = 2.0
MODEL = "slow:10000"
DEP = deployment_id("fake", MODEL)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def one_at_a_time(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI
) -> AsyncIterator[Stack]:
    fake = {"kind": "openai-compatible", "api_base": upstream.base_url, "concurrency": 1}
    extra = {
        "providers": {"fake": fake},
        "routes": {"q-slow": {"deployments": [{"provider": "fake", "model": MODEL}]}},
        "ingress": {"default_deadline_s": DEFAULT_S},
    }
    stack = await start_stack(tmp_path_factory.mktemp("queued-deadline"), extra)
    try:
        yield stack
    finally:
        await stack.supervisor.stop()


def _chat(text: str) -> dict[str, object]:
    return {"model": "q-slow", "messages": [{"role": "user", "content": text}]}


async def _ask(stack: Stack, text: str, own_s: float = 0) -> tuple[replies.Reply, float]:
    nc = await stack.connect("app")
    start = time.monotonic()
    try:
        auth = {"Authorization": f"Bearer {stack.api_key}"}
        if own_s:
            auth[h.DEADLINE] = str(int((time.time() + own_s) * 1000))
        reply = await bus_answer(nc, _chat(text), auth)
        return reply, time.monotonic() - start
    finally:
        await nc.close()


async def _held(stack: Stack) -> bool:
    nc = await stack.connect("provisioner")
    try:
        kv = await nc.jetstream(timeout=5).key_value(subjects.SCHED_BUCKET)
        try:
            entry = await kv.get(f"dep.{DEP}")
        except Exception:  # no record yet
            return False
        return SCHED_DECODER.decode(entry.value or b"").held
    finally:
        await nc.close()


async def _hold_messages(stack: Stack) -> int:
    nc = await stack.connect("provisioner")
    try:
        info = await nc.jetstream(timeout=5).stream_info(subjects.HOLD_STREAM)
        return info.state.messages
    finally:
        await nc.close()


async def _saturate(stack: Stack, name: str) -> list[asyncio.Task[tuple[replies.Reply, float]]]:
    """The deployment's slot taken for 10 s and the feeder holding what comes next."""
    tasks = [asyncio.create_task(_ask(stack, f"{name}-first", own_s=30))]
    await asyncio.sleep(0.3)
    tasks += [asyncio.create_task(_ask(stack, f"{name}-wait{i}")) for i in range(3)]
    async with asyncio.timeout(6):
        while not await _held(stack):
            await asyncio.sleep(0.1)
    return tasks


@pytest.mark.asyncio(loop_scope="session")
async def test_a_held_bus_request_past_its_deadline_gets_its_504(one_at_a_time: Stack) -> None:
    tasks = await _saturate(one_at_a_time, "bus")
    reply, took = await _ask(one_at_a_time, "held")
    assert (reply.kind, reply.status) == (replies.ReplyKind.ERROR, 504), reply.body
    message = msgspec.json.decode(reply.body)["error"]["message"]
    assert message.startswith("the request deadline passed while it was queued"), message
    assert "ingress.default_deadline_s (2 s)" in message, message
    assert took < DEFAULT_S + 2, took  # within a feeder tick of its deadline, not the slot's 10 s
    assert reply.deployment == DEP
    assert reply.attempts == 0  # no provider attempt (it said the caller's Sy-Attempt: a review)
    first, _ = await tasks[0]
    assert first.kind == replies.ReplyKind.FINAL  # the slot's own request is untouched
    await asyncio.gather(*tasks)
    assert await _hold_messages(one_at_a_time) == 0  # and it left HOLD


@pytest.mark.asyncio(loop_scope="session")
async def test_a_held_http_request_past_its_deadline_gets_a_504(one_at_a_time: Stack) -> None:
    tasks = await _saturate(one_at_a_time, "http")
    start = time.monotonic()
    async with httpx.AsyncClient(timeout=30) as http:
        resp = await http.post(
            f"{one_at_a_time.tail_url}/v1/chat/completions",
            json=_chat("held-http"),
            headers={
                "Authorization": f"Bearer {one_at_a_time.api_key}",
                "X-Request-Timeout": "2",
            },
        )
    took = time.monotonic() - start
    assert resp.status_code == 504, resp.text
    assert resp.json()["error"]["code"] == "deadline_exceeded", resp.text
    assert took < DEFAULT_S + 2, took  # the edge's own timer: it was never silent here
    await asyncio.gather(*tasks, return_exceptions=True)  # (the bus ones: the test above)
    assert await _hold_messages(one_at_a_time) == 0
