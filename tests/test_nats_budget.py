"""Budgets bind NATS callers: an internal client (``LLMClient`` in the INTERNAL account, which
no HTTP edge checks) that spends its key's budget is refused by the heads with the edge's 429
``budget_exceeded``, within ``admin.budget_watch_s`` + 1 s of accounting counting the spend
(the gateway's budget watch marks the key in ``sy_key_spent``; every head follows the bucket).
Raising the budget serves the key again at once (the heads compare the mark with the key's
record, which they follow too). A real stack: NATS, Valkey, accounting, gateway, heads.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from nats.js.errors import KeyDeletedError, KeyNotFoundError

from switchyard.admin.keys import KeyAdmin
from switchyard.bus import subjects
from switchyard.client import LLMClient
from switchyard.errors import ApiError
from switchyard.limits import periods, spent_marks
from tests.stacks import Stack, start_stack
from tests.upstream import FakeOpenAI

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WATCH_S = 0.5  # admin.budget_watch_s of this stack
# Each request costs $0.009 (9 tokens at $0.001): the second crosses a budget of $0.01.
PRICE = {"input_per_token": 0.001, "output_per_token": 0.001}
BUDGET = 0.01
CHAT = {"model": "pricey", "messages": [{"role": "user", "content": "hi"}]}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def budgeted(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI
) -> AsyncIterator[Stack]:
    fake = {"kind": "openai-compatible", "api_base": upstream.base_url, "concurrency": 8}
    routes = {"pricey": {"deployments": [{"provider": "fake", "model": "echo", "price": PRICE}]}}
    extra: dict[str, Any] = {
        "providers": {"fake": fake},
        "routes": routes,
        "admin": {"budget_watch_s": WATCH_S},
    }
    stack = await start_stack(tmp_path_factory.mktemp("nats-budget"), extra)
    try:
        yield stack
    finally:
        await stack.supervisor.stop()


async def _spent(stack: Stack, key_id: str) -> float:
    return float((await stack.admin("GET", f"/keys/{key_id}")).json()["spend"]["period_spend_usd"])


async def test_a_nats_caller_is_refused_once_its_budget_is_spent_and_served_when_raised(
    budgeted: Stack,
) -> None:
    stack = budgeted
    api_key, record = await stack.new_key("nats-budget", budget_usd=BUDGET, budget_period="daily")
    nc = await stack.connect("app")
    try:
        async with LLMClient(nc, api_key=api_key) as llm:
            for _ in range(2):  # the second crosses the budget
                await llm.chat(CHAT)
            # When accounting counted the spend: the bound runs from there.
            async with asyncio.timeout(20):
                while await _spent(stack, record.id) < BUDGET:
                    await asyncio.sleep(0.05)
            counted = time.monotonic()
            refused: ApiError | None = None
            served_after = 0
            while time.monotonic() - counted < 10:
                try:
                    await llm.chat(CHAT)
                    served_after += 1
                except ApiError as exc:
                    refused = exc
                    break
                await asyncio.sleep(0.1)
            took = time.monotonic() - counted
            assert refused is not None, "a NATS caller was never held to its key's budget"
            assert refused.status == 429
            assert refused.code == "budget_exceeded"
            assert refused.type == "insufficient_quota"
            assert "is used up" in refused.message
            # Within the documented bound (plus one request's time).
            assert took <= WATCH_S + 1.0 + 0.5, (took, served_after)
            # Retry-After: until the daily period resets, as the edge says.
            end = periods.current("daily", time.time())[1]
            assert refused.retry_after is not None
            assert abs(refused.retry_after - (end - time.time())) < 5

            # Refused every time after (not a one-off), by the mark the heads follow.
            with pytest.raises(ApiError) as again:
                await llm.chat(CHAT)
            assert again.value.code == "budget_exceeded"
            assert await _marked(stack, record.id)

            # The budget raised: served again as soon as the heads see the key's new record.
            admin = await stack.connect("admin")
            try:
                await KeyAdmin(admin.jetstream(timeout=10)).update(record.id, budget_usd=1.0)
            finally:
                await admin.close()
            answer, codes = None, []
            async with asyncio.timeout(5):
                while answer is None:
                    try:
                        answer = await llm.chat(CHAT)
                    except ApiError as exc:
                        codes.append(exc.code)
                        await asyncio.sleep(0.1)
            assert set(codes) <= {"budget_exceeded"}
            assert answer["choices"][0]["message"]["content"]
    finally:
        await nc.close()

    # The watch deleted the mark at its next scan (a raised budget leaves none behind).
    async with asyncio.timeout(5):
        while await _marked(stack, record.id):
            await asyncio.sleep(0.2)


async def _marked(stack: Stack, key_id: str) -> bool:
    """Whether the key has a spent mark, as a head reads the bucket."""
    head = await stack.connect("head")
    try:
        kv = await head.jetstream(timeout=5).key_value(subjects.KEY_SPENT_BUCKET)
        try:
            await kv.get(spent_marks.entry_name(key_id))
        except (KeyNotFoundError, KeyDeletedError):
            return False
        return True
    finally:
        await head.close()


async def test_a_spent_key_asking_for_a_model_it_may_not_use_gets_the_edges_403(
    budgeted: Stack,
) -> None:
    """The head checks the key's models before its budget, as the edges do: a spent key
    asking for a model it may not use is told 403 ``model`` (not 429: no wait helps)."""
    stack = budgeted
    api_key, _ = await stack.new_key(
        "nats-budget-models", budget_usd=BUDGET, budget_period="daily", models=["pricey"]
    )
    nc = await stack.connect("app")
    try:
        async with LLMClient(nc, api_key=api_key) as llm:
            for _ in range(2):  # the second crosses the budget
                await llm.chat(CHAT)
            code = ""
            async with asyncio.timeout(20):
                while not code:  # refused once the heads hold the mark
                    try:
                        await llm.chat(CHAT)
                    except ApiError as exc:
                        code = exc.code or "?"
                    await asyncio.sleep(0.1)
            assert code == "budget_exceeded"
            with pytest.raises(ApiError) as forbidden:
                await llm.chat({**CHAT, "model": "elsewhere"})
            assert forbidden.value.status == 403, forbidden.value.code
            assert forbidden.value.param == "model"
    finally:
        await nc.close()
