"""Attempts their caller gave up on are not served: a head that reaches one late drops it.

A caller re-sends a request no head accepted within its accept timeout, and after its last
attempt tells its own caller the request failed. A head that was paused (or busy past its
``max_in_flight``) meanwhile still holds the earlier copies; serving them called the provider
for answers nobody read (an explorer's head, paused 28 s, ran 229 requests twice).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import msgspec
import pytest

from switchyard.bus import headers as h
from switchyard.bus import subjects
from switchyard.client import LLMClient
from switchyard.errors import ServiceUnavailable
from tests.stacks import Stack
from tests.support import pause
from tests.upstream import FakeOpenAI

pytestmark = pytest.mark.integration

HEADS = ("head-1", "head-2")


def _chat(text: str) -> dict[str, object]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}


def _calls_with(upstream: FakeOpenAI, text: str) -> int:
    return sum(
        1
        for call in upstream.calls_for("echo")
        if any(m.get("content") == text for m in call.body.get("messages", []))
    )


async def _stale_total(stack: Stack) -> float:
    return sum(
        value
        for name, labels, value in await stack.samples("head")
        if name == "switchyard_routing_attempts_total" and labels.get("outcome") == "stale"
    )


async def _pause_heads(stack: Stack) -> list[int]:
    pids = [stack.process(name).pid for name in HEADS]
    for pid in pids:
        assert pid is not None
        await pause(pid)
    return [pid for pid in pids if pid is not None]


def _resume(pids: list[int]) -> None:
    for pid in pids:
        os.kill(pid, signal.SIGCONT)


async def test_attempts_a_caller_gave_up_on_never_reach_the_provider(
    stack: Stack, upstream: FakeOpenAI
) -> None:
    text = f"given up {time.time_ns()}"
    dropped_before = await _stale_total(stack)
    nc = await stack.connect("app")
    pids = await _pause_heads(stack)
    try:
        async with LLMClient(nc, api_key=stack.api_key, attempts=2, accept_timeout=0.5) as llm:
            with pytest.raises(ServiceUnavailable) as failed:
                await llm.chat(_chat(text), timeout=30)
        assert failed.value.code == "no_workers"
        # Past both attempts' Sy-Accept-By plus the 2 s heads allow for clocks.
        await asyncio.sleep(2.5)
    finally:
        _resume(pids)
    try:
        # The resumed heads read both copies; each is dropped and counted, none is stored.
        deadline = time.monotonic() + 15
        while await _stale_total(stack) - dropped_before < 2:
            assert time.monotonic() < deadline, "the heads never dropped the stale copies"
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # a copy stored anyway would reach the provider by now
        assert _calls_with(upstream, text) == 0
    finally:
        await nc.close()


async def test_a_head_paused_within_the_accept_wait_still_serves_the_request(
    stack: Stack, upstream: FakeOpenAI
) -> None:
    """The other side: a copy reached late but while its caller still waits is served, once."""
    text = f"still waited for {time.time_ns()}"
    nc = await stack.connect("app")
    try:
        async with LLMClient(nc, api_key=stack.api_key, accept_timeout=10) as llm:
            pids = await _pause_heads(stack)
            try:
                call = asyncio.ensure_future(llm.chat(_chat(text), timeout=30))
                await asyncio.sleep(1.5)
            finally:
                _resume(pids)
            answer = await call
    finally:
        await nc.close()
    assert answer["choices"][0]["message"]["content"] == f"echo: {text}"
    assert _calls_with(upstream, text) == 1


async def test_an_unreadable_accept_by_is_a_400_naming_it(stack: Stack) -> None:
    nc = await stack.connect("app")
    try:
        reply = await nc.request(
            subjects.CHAT,
            msgspec.json.encode(_chat("bad header")),
            timeout=10,
            headers={
                "Authorization": f"Bearer {stack.api_key}",
                h.REQUEST_ID: f"bad-accept-by-{time.time_ns()}",
                h.ACCEPT_BY: "soon",
            },
        )
    finally:
        await nc.close()
    assert (reply.headers or {}).get(h.STATUS) == "400"
    assert h.ACCEPT_BY in reply.data.decode()


async def test_a_caller_whose_clock_runs_ahead_is_told_why_its_attempt_was_dropped(
    stack: Stack, upstream: FakeOpenAI
) -> None:
    """Dropped in silence, a caller still waiting (its clock ahead of the head's) waited out
    its own timeout and learnt nothing; now it reads a 504 that names the clocks."""
    text = f"clock ahead {time.time_ns()}"
    nc = await stack.connect("app")
    try:
        reply = await nc.request(
            subjects.CHAT,
            msgspec.json.encode(_chat(text)),
            timeout=10,
            headers={
                "Authorization": f"Bearer {stack.api_key}",
                h.REQUEST_ID: f"clock-ahead-{time.time_ns()}",
                h.ACCEPT_BY: str(int((time.time() - 10) * 1000)),
            },
        )
    finally:
        await nc.close()
    assert (reply.headers or {}).get(h.STATUS) == "504"
    assert "clock runs ahead" in reply.data.decode()
    await asyncio.sleep(0.5)
    assert _calls_with(upstream, text) == 0
