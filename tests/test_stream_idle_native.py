"""``timeouts.idle_s`` on the readers other than the direct OpenAI-compatible one: an Anthropic
provider that stalls after its first text delta, asked natively (Messages, passed through) and
as chat completions (through litellm). Either stream held its client until ``stream_s``, kept
open by the edge's keep-alives; now it ends about ``idle_s`` into the silence with an error
naming the wait and the setting. On the session stack with the fake Anthropic API over HTTP.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from switchyard.schemas.routing import deployment_id
from tests.fakes.anthropic import FakeAnthropic
from tests.native_routes import native_routes, stream_messages
from tests.stacks import Stack

pytestmark = pytest.mark.integration

CLAUDE = "s10g-idle-claude"
STALLS: dict[str, Any] = {
    "provider": CLAUDE,
    "model": "gated",
    "timeouts": {"idle_s": 1},
}  # gate never opened
# Stalls too, behind SSE comments (a proxy's keep-alive): no activity on any path.
MURMURS: dict[str, Any] = {**STALLS, "model": "murmurs"}
ROUTES: dict[str, list[dict[str, Any]]] = {
    "s10g-idle-messages": [STALLS],
    "s10g-idle-murmurs": [MURMURS],
    "s10g-idle-chat": [STALLS],
    "s10g-idle-ready": [{"provider": CLAUDE, "model": "ok"}],
}
SAID = "none for 1 s: timeouts.idle_s"


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def idle(stack: Stack, claude_fake: tuple[FakeAnthropic, str]) -> AsyncIterator[Stack]:
    providers = {CLAUDE: {"kind": "anthropic", "api_base": claude_fake[1], "secret": CLAUDE}}

    async def ready() -> bool:
        answer = await stream_messages(stack, "s10g-idle-ready", "s10g-idle-up")
        return answer.status_code == 200

    async with native_routes(stack, providers, ROUTES, ready):
        # litellm is imported at a model-proxy's first call through it: seconds, not timed here
        for _ in range(2):  # (one for each model-proxy, at most)
            warm = await _chat(stack, "s10g-idle-ready", timeout=120)
            assert warm.status_code == 200, warm.text
        yield stack
    for model in ("gated", "murmurs"):
        await stack.admin("DELETE", f"/deployments/{deployment_id(CLAUDE, model)}/cooldown")


async def _chat(stack: Stack, alias: str, timeout: float = 15) -> httpx.Response:
    """A streamed chat request (translated to Anthropic's API by litellm), read whole."""
    body = {
        "model": alias,
        "stream": True,
        "max_tokens": 32,
        "messages": [{"role": "user", "content": "hi"}],
    }
    async with httpx.AsyncClient(base_url=stack.tail_url, timeout=timeout) as http:
        return await asyncio.wait_for(
            http.post(
                "/v1/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {stack.api_key}"},
            ),
            timeout=timeout,
        )


async def test_a_stalled_native_stream_ends_at_idle_s(idle: Stack) -> None:
    started = time.monotonic()
    answer = await asyncio.wait_for(
        stream_messages(idle, "s10g-idle-messages", "s10g-idle-m1"), timeout=15
    )
    took = time.monotonic() - started
    assert answer.status_code == 200, answer.text
    assert "text_delta" in answer.text  # the answer had begun
    assert "event: error" in answer.text, answer.text
    assert SAID in answer.text, answer.text
    assert took < 8, took


async def test_sse_comments_alone_are_no_activity_on_a_native_stream(idle: Stack) -> None:
    """A provider that stalls after its first delta behind SSE comments (``: keep-alive``
    every 0.3 s): the direct path and litellm never counted a comment as the provider's
    activity, the passed-through streams did (any line read reset the clock), so the stall
    held its client for as long as the comments came (until ``stream_s``). One rule now: an
    event with data is activity, a comment or blank line alone is not."""
    started = time.monotonic()
    answer = await asyncio.wait_for(
        stream_messages(idle, "s10g-idle-murmurs", "s10g-idle-m2"), timeout=15
    )
    took = time.monotonic() - started
    assert answer.status_code == 200, answer.text
    assert "text_delta" in answer.text  # the answer had begun
    assert SAID in answer.text, answer.text
    assert took < 8, took


async def test_a_stalled_stream_through_litellm_ends_at_idle_s(idle: Stack) -> None:
    started = time.monotonic()
    answer = await _chat(idle, "s10g-idle-chat", timeout=40)  # (a model-proxy not warmed yet)
    took = time.monotonic() - started
    assert answer.status_code == 200, answer.text
    assert '"content"' in answer.text  # the answer had begun
    assert SAID in answer.text, answer.text
    assert '"code":"provider_timeout"' in answer.text.replace(" ", ""), answer.text
    assert took < 30, took  # (the stall alone: until stream_s, 600 s)
