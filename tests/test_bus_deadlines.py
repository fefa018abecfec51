"""Deadlines on the NATS API: ``Sy-Deadline`` (and ``Sy-Accept-By``) given in seconds instead
of milliseconds is a 400 saying so; one further ahead than ``ingress.max_deadline_s`` (2 s
here) is capped to it, as the HTTP edges cap theirs.

On a stack of its own, as the internal client ``app``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import msgspec
import pytest
import pytest_asyncio

from switchyard.bus import headers as h
from switchyard.bus import replies
from tests.stacks import Stack, start_stack
from tests.support import bus_answer
from tests.upstream import FakeOpenAI

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHAT = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def timed(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI
) -> AsyncIterator[Stack]:
    extra = {
        "providers": {"fake": {"kind": "openai-compatible", "api_base": upstream.base_url}},
        "routes": {
            "echo": {"deployments": [{"provider": "fake", "model": "echo"}]},
            "slow": {"deployments": [{"provider": "fake", "model": "slow:4000"}]},
        },
        "ingress": {"default_deadline_s": 2, "max_deadline_s": 2},
    }
    stack = await start_stack(tmp_path_factory.mktemp("deadlines"), extra)
    try:
        yield stack
    finally:
        await stack.supervisor.stop()


async def _answer(stack: Stack, headers: dict[str, str], model: str = "echo") -> replies.Reply:
    """The final or error message of one chat request for ``model`` sent with ``headers``
    (and the key)."""
    nc = await stack.connect("app")
    try:
        headers = {"Authorization": f"Bearer {stack.api_key}", **headers}
        return await bus_answer(nc, {**CHAT, "model": model}, headers)
    finally:
        await nc.close()


@pytest.mark.parametrize("header", [h.DEADLINE, h.ACCEPT_BY])
async def test_a_time_in_seconds_is_a_400_saying_it_is_in_milliseconds(
    timed: Stack, header: str
) -> None:
    """Unix seconds where milliseconds are asked (an easy mix-up) read as a moment in January
    1970: the request was answered 504 "deadline passed before it was routed", which sent the
    caller looking at its clocks."""
    seconds = str(int(time.time()) + 60)
    reply = await _answer(timed, {header: seconds})
    assert (reply.kind, reply.status) == (replies.ReplyKind.ERROR, 400)
    error = msgspec.json.decode(reply.body)["error"]
    assert (error["param"], error["code"]) == (header, "invalid_header")
    assert "milliseconds" in error["message"]
    assert f"{seconds}000" in error["message"]
    fine = await _answer(timed, {header: f"{seconds}000"})
    assert fine.kind is replies.ReplyKind.FINAL


async def test_a_deadline_further_ahead_than_the_edges_allow_is_capped(timed: Stack) -> None:
    """The HTTP edges cap a client's deadline at ``ingress.max_deadline_s``; a bus caller's
    was taken as given, however far ahead (a request could wait in its queue past the hour
    model-proxies remember a cancel for). A head now caps it the same way."""
    far = str(int((time.time() + 3600) * 1000))
    began = time.monotonic()
    reply = await _answer(timed, {h.DEADLINE: far}, model="slow")
    took = time.monotonic() - began
    assert (reply.kind, reply.status) == (replies.ReplyKind.ERROR, 504), reply
    assert msgspec.json.decode(reply.body)["error"]["code"] == "deadline_exceeded"
    assert took < 3.5, took  # at the 2 s cap, not after the provider's 4 s answer
