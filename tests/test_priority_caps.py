"""A key's ``max_priority`` caps what its provider call asks for, not only its queue class."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.stacks import Stack
from tests.upstream import FakeOpenAI

pytestmark = pytest.mark.integration


async def _tier_sent(
    stack: Stack, upstream: FakeOpenAI, key: str, tier: str, priority: str = ""
) -> object:
    text = f"tier {tier} {time.time_ns()}"
    async with httpx.AsyncClient(timeout=30) as http:
        sent = await http.post(
            f"{stack.tail_url}/v1/chat/completions",
            json={
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": text}],
                "service_tier": tier,
            },
            headers={
                "Authorization": f"Bearer {key}",
                **({"x-switchyard-priority": priority} if priority else {}),
            },
        )
    assert sent.status_code == 200, sent.text
    (call,) = [
        c
        for c in upstream.calls_for("echo")
        if any(m.get("content") == text for m in c.body.get("messages", []))
    ]
    return call.body.get("service_tier")


async def test_a_capped_key_asking_for_priority_processing_gets_the_default_tier(
    stack: Stack, upstream: FakeOpenAI
) -> None:
    """It ran as `default` in Switchyard's queues, and its provider still got
    `service_tier: "priority"`, which OpenAI charges more for than the one price billed."""
    capped, _ = await stack.new_key("capped-tier", max_priority="default")
    assert await _tier_sent(stack, upstream, capped, "priority") == "default"
    assert await _tier_sent(stack, upstream, capped, "flex") == "flex"  # lower: kept


async def test_an_uncapped_key_keeps_the_tier_it_asked_for(
    stack: Stack, upstream: FakeOpenAI
) -> None:
    assert await _tier_sent(stack, upstream, stack.api_key, "priority") == "priority"


async def test_a_request_run_below_interactive_does_not_ask_its_provider_for_priority(
    stack: Stack, upstream: FakeOpenAI
) -> None:
    """As a Batch API line does (always `batch`): a reviewer's request asking for `batch` here
    and `priority` processing at OpenAI got both."""
    sent = await _tier_sent(stack, upstream, stack.api_key, "priority", priority="batch")
    assert sent == "default"


async def _ran_in(stack: Stack, key: str, *, stream: bool, **given: str) -> str | None:
    """The class the answer says its request ran in (``x-switchyard-priority``)."""
    body: dict[str, object] = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "which class"}],
        "stream": stream,
    }
    if tier := given.pop("service_tier", ""):
        body["service_tier"] = tier
    async with httpx.AsyncClient(timeout=30) as http:
        answer = await http.post(
            f"{stack.tail_url}/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {key}", **given},
        )
    assert answer.status_code == 200, answer.text
    return answer.headers.get("x-switchyard-priority")


@pytest.mark.parametrize("stream", [False, True])
async def test_the_answer_names_the_class_its_request_ran_in(stack: Stack, stream: bool) -> None:
    """A key's cap lowered a request, or a ``service_tier`` chose its class, and nothing in
    the answer said so: the client could not tell why its request waited behind others."""
    capped, _ = await stack.new_key("capped-class", max_priority="default")
    wish = {"x-switchyard-priority": "interactive"}
    assert await _ran_in(stack, capped, stream=stream, **wish) == "default"
    assert await _ran_in(stack, stack.api_key, stream=stream, **wish) == "interactive"
    assert await _ran_in(stack, stack.api_key, stream=stream, service_tier="flex") == "batch"
    assert await _ran_in(stack, stack.api_key, stream=stream) == "default"
