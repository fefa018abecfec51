"""Providers' web searches are billed: a native Responses or Anthropic answer that searched the
web costs its tokens plus each search (the route's price, else litellm's, else $0.01), in the
usage event, the key's spend and its budget. On the session stack, with this module's own
providers and routes (removed at the end)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from switchyard.bus import subjects
from switchyard.schemas.events import UsageEvent
from switchyard.workers.accounting.pricing import price_map
from tests.fakes.anthropic import INPUT_TOKENS, OUTPUT_TOKENS, FakeAnthropic
from tests.stacks import Stack
from tests.support import usage_events
from tests.upstream import FakeOpenAI

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# $1 per million prompt tokens, $2 per million completion tokens.
TOKENS = {"input_per_token": 1e-6, "output_per_token": 2e-6}
PROVIDERS = ("ws-openai", "ws-anthropic")
ROUTES = {
    # The route's own search price.
    "ws-responses": {
        "provider": "ws-openai",
        "model": "o",
        "price": {**TOKENS, "web_search_per_call": 0.02},
    },
    # No search price anywhere ("ok" is no model litellm knows): $0.01 a search.
    "ws-claude": {"provider": "ws-anthropic", "model": "ok", "price": TOKENS},
    # No price at all: litellm's for the tokens and the searches ($0.025 for gpt-4.1).
    "ws-mapped": {"provider": "ws-openai", "model": "gpt-4.1"},
    # Free tokens: only the searches reach the budget.
    "ws-budget": {
        "provider": "ws-anthropic",
        "model": "budget",  # (the fake answers any model it has no mode for as "ok")
        "price": {"input_per_token": 0, "output_per_token": 0, "web_search_per_call": 0.03},
    },
}
ANTHROPIC_HEADERS = {"anthropic-version": "2023-06-01"}
# The fake Responses API answers "native: hi": 5 prompt tokens, 2 completion tokens.
RESPONSES_TOKENS = (5, 2)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def searching(
    stack: Stack, upstream: FakeOpenAI, claude_fake: tuple[FakeAnthropic, str]
) -> AsyncIterator[Stack]:
    providers = {
        "ws-openai": {"kind": "openai", "api_base": upstream.base_url},
        "ws-anthropic": {"kind": "anthropic", "api_base": claude_fake[1]},
    }
    try:
        for name, provider in providers.items():
            put = await stack.admin("PUT", f"/providers/{name}", provider)
            assert put.status_code == 200, put.text
        for alias, deployment in ROUTES.items():
            put = await stack.admin("PUT", f"/routes/{alias}", {"deployments": [deployment]})
            assert put.status_code == 200, put.text
        yield stack
    finally:
        for alias in ROUTES:
            await stack.admin("DELETE", f"/routes/{alias}")
        for name in PROVIDERS:
            await stack.admin("DELETE", f"/providers/{name}")


async def _send(stack: Stack, path: str, body: dict[str, Any], key: str) -> httpx.Response:
    """One request, whole or streamed (read to its end); re-sent while the heads have not
    seen this module's routes yet (404)."""
    headers = {"Authorization": f"Bearer {key}", **ANTHROPIC_HEADERS}
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient(base_url=stack.tail_url, timeout=30) as http:
        while True:
            async with http.stream("POST", path, json=body, headers=headers) as resp:
                await resp.aread()
            if resp.status_code != 404 or time.monotonic() > deadline:
                return resp
            await asyncio.sleep(0.2)


def _responses(alias: str, searches: int, *, stream: bool = False) -> dict[str, Any]:
    return {
        "model": alias,
        "input": "hi",
        "tools": [{"type": "web_search"}],
        "max_tool_calls": searches,
        "stream": stream,
    }


def _message(alias: str, searches: int, *, stream: bool = False) -> dict[str, Any]:
    tool = {"type": "web_search_20250305", "name": "web_search", "max_uses": searches}
    return {
        "model": alias,
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [tool],
        "stream": stream,
    }


async def _events(stack: Stack, key_id: str, count: int) -> list[UsageEvent]:
    """The usage events billed to ``key_id``, once ``count`` are in the USAGE stream."""
    nc = await stack.connect("provisioner")
    found: list[UsageEvent] = []
    try:
        js = nc.jetstream()
        deadline = time.monotonic() + 15
        while len(found) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            last = (await js.stream_info(subjects.USAGE_STREAM)).state.last_seq
            found = []
            for seq in range(max(1, last - 200), last + 1):
                raw = await js.get_msg(subjects.USAGE_STREAM, seq)
                found += [e for e in usage_events(raw.data) if e.key_id == key_id]
    finally:
        await nc.close()
    assert len(found) == count, found
    return found


async def _spent_nano(stack: Stack, key_id: str, requests: int) -> int:
    """The key's spend in nano-USD once accounting counted ``requests`` of its requests."""
    deadline = time.monotonic() + 15
    while True:
        days = (await stack.admin("GET", "/spend?days=1")).json()["days"]
        rows = [r for r in days if r.get("key") == key_id]
        if rows and rows[0]["requests"] >= requests:
            break
        assert time.monotonic() < deadline, days
        await asyncio.sleep(0.2)
    shown = (await stack.admin("GET", f"/keys/{key_id}")).json()["spend"]
    assert round(shown["total_spend_usd"] * 1e9) == round(rows[0]["cost_usd"] * 1e9)
    return round(shown["total_spend_usd"] * 1e9)


async def test_responses_searches_are_billed_at_the_routes_price(searching: Stack) -> None:
    key, record = await searching.new_key("ws-responses")
    for stream in (False, True):
        done = await _send(
            searching, "/v1/responses", _responses("ws-responses", 3, stream=stream), key
        )
        assert done.status_code == 200, done.text
        assert done.text.count('"web_search_call"') >= 3  # passed through untouched
    events = await _events(searching, record.id, 2)
    assert sorted((e.stream, e.web_search_calls) for e in events) == [(False, 3), (True, 3)]
    # Each: 5 x $1 + 2 x $2 per million, + 3 x $0.02.
    prompt, completion = RESPONSES_TOKENS
    each = prompt * 1_000 + completion * 2_000 + 3 * 20_000_000
    assert await _spent_nano(searching, record.id, 2) == 2 * each


async def test_anthropic_searches_are_billed_at_the_default_price(searching: Stack) -> None:
    key, record = await searching.new_key("ws-claude")
    for stream in (False, True):
        done = await _send(searching, "/v1/messages", _message("ws-claude", 2, stream=stream), key)
        assert done.status_code == 200, done.text
    events = await _events(searching, record.id, 2)
    assert sorted((e.stream, e.web_search_calls) for e in events) == [(False, 2), (True, 2)]
    # Each: 11 x $1 + 7 x $2 per million, + 2 x $0.01.
    each = INPUT_TOKENS * 1_000 + OUTPUT_TOKENS * 2_000 + 2 * 10_000_000
    assert await _spent_nano(searching, record.id, 2) == 2 * each


async def test_searches_without_a_route_price_cost_litellms(searching: Stack) -> None:
    key, record = await searching.new_key("ws-mapped")
    done = await _send(searching, "/v1/responses", _responses("ws-mapped", 1), key)
    assert done.status_code == 200, done.text
    [event] = await _events(searching, record.id, 1)
    assert event.web_search_calls == 1
    entry = price_map()["gpt-4.1"]
    prompt, completion = RESPONSES_TOKENS
    usd = (
        prompt * entry["input_cost_per_token"]
        + completion * entry["output_cost_per_token"]
        + entry["search_context_cost_per_query"]["search_context_size_medium"]
    )
    assert await _spent_nano(searching, record.id, 1) == round(usd * 1e9)


async def test_a_budget_only_searches_exceed_is_refused_after_the_crossing_request(
    searching: Stack,
) -> None:
    """Tokens free, each search $0.03, a $0.05 budget: the second request crosses it (admitted
    at $0.03 spent), the third is refused."""
    key, record = await searching.new_key("ws-budget", budget_usd=0.05)
    first = await _send(searching, "/v1/messages", _message("ws-budget", 1), key)
    assert first.status_code == 200, first.text
    assert await _spent_nano(searching, record.id, 1) == 30_000_000
    second = await _send(searching, "/v1/messages", _message("ws-budget", 1, stream=True), key)
    assert second.status_code == 200, second.text
    assert await _spent_nano(searching, record.id, 2) == 60_000_000
    refused = None
    deadline = time.monotonic() + 15
    while refused is None and time.monotonic() < deadline:
        resp = await _send(searching, "/v1/messages", _message("ws-budget", 1), key)
        if resp.status_code == 429:
            refused = resp
        else:
            assert resp.status_code == 200, resp.text
            await asyncio.sleep(0.2)
    assert refused is not None, "the budget was never enforced"
    error = refused.json()["error"]  # in Anthropic's shape: no code, the message says
    assert error["type"] == "rate_limit_error"
    assert "budget of $0.05" in error["message"]
    assert "spent $0.06" in error["message"]
