"""Answers the model-proxy got wrong without an error, through the session stack with the
official OpenAI SDK: embeddings in the encoding asked for, an empty litellm stream as the
provider's failure, legacy completions litellm cannot serve as asked refused, and a deadline
that stopped a provider call billed.

Providers reached through litellm are fakes of Gemini and Anthropic over real HTTP
(tests/fakes), added to the session stack's live route table for this module only.
"""

from __future__ import annotations

import asyncio
import base64
import struct
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest
import pytest_asyncio

from tests.fakes import gemini as fake_gemini
from tests.fakes.anthropic import REPLY, FakeAnthropic
from tests.fakes.gemini import FakeGemini
from tests.stacks import Stack

pytestmark = [
    pytest.mark.integration,
    # litellm's Gemini path builds pydantic schemas for TypedDicts marked ReadOnly on first use;
    # pydantic warns that it cannot enforce ReadOnly. Harmless, and not ours to fix.
    pytest.mark.filterwarnings("ignore:Items? .* using the `ReadOnly` qualifier:UserWarning"),
]

SECRET = "answers-llm-key"
# Two providers in front of the fake Anthropic: each deployment of "empty" cools down on its own.
PROVIDERS = ("answers-gemini", "answers-claude", "answers-claude-alone")
ROUTES = {
    "answers-embed": {
        "deployments": [{"provider": "answers-gemini", "model": "text-embedding-004"}]
    },
    "answers-claude": {"deployments": [{"provider": "answers-claude", "model": "ok"}]},
    # Anthropic answers 200 and closes before its first event; the session's echo route is the
    # fallback.
    "answers-empty": {
        "deployments": [{"provider": "answers-claude", "model": "empty"}],
        "fallbacks": ["gpt-4o-mini"],
    },
    "answers-empty-only": {"deployments": [{"provider": "answers-claude-alone", "model": "empty"}]},
    # A provider that takes 4 s, well past the 2 s deadline its requests get.
    "answers-late": {"deployments": [{"provider": "fake", "model": "slow:4000"}]},
}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def routed(stack: Stack) -> AsyncIterator[Stack]:
    gemini, claude = FakeGemini(), FakeAnthropic()
    claude_base = await claude.start()
    bases = {"answers-gemini": await gemini.start()}
    bases["answers-claude"] = bases["answers-claude-alone"] = claude_base
    kinds = {"answers-gemini": "gemini"}
    kinds["answers-claude"] = kinds["answers-claude-alone"] = "anthropic"
    try:
        stored = await stack.admin("PUT", f"/secrets/{SECRET}", {"value": "fake-llm-key-0123"})
        assert stored.status_code in (200, 201), stored.text
        for name in PROVIDERS:
            provider = {"kind": kinds[name], "api_base": bases[name], "secret": SECRET}
            put = await stack.admin("PUT", f"/providers/{name}", provider)
            assert put.status_code == 200, put.text
        for alias, route in ROUTES.items():
            put = await stack.admin("PUT", f"/routes/{alias}", route)
            assert put.status_code == 200, put.text
        yield stack
    finally:
        for alias in ROUTES:
            await stack.admin("DELETE", f"/routes/{alias}")
        for name in PROVIDERS:
            await stack.admin("DELETE", f"/providers/{name}")
        await stack.admin("DELETE", f"/secrets/{SECRET}?force=true")
        await gemini.stop()
        await claude.stop()


def _client(stack: Stack, api_key: str | None = None) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=f"{stack.tail_url}/v1", api_key=api_key or stack.api_key, max_retries=0
    )


def _floats(encoded: Any) -> list[float]:
    """A base64 embedding as OpenAI sends it: little-endian float32."""
    assert isinstance(encoded, str), f"not base64: {encoded!r}"
    raw = base64.b64decode(encoded)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


@pytest.mark.parametrize("model", ["answers-embed", "demo"])
async def test_embeddings_come_in_the_encoding_asked_for(routed: Stack, model: str) -> None:
    """A litellm provider's and the demo's embeddings were float lists whatever was asked: the
    Node SDK, which asks for base64 and decodes what comes back as base64, got garbage
    (``[7.006e-45]``) without an error."""
    client = _client(routed)
    try:
        floats = await client.embeddings.create(
            model=model, input=["a", "bb"], encoding_format="float"
        )
        packed = await client.embeddings.create(
            model=model, input=["a", "bb"], encoding_format="base64"
        )
    finally:
        await client.close()
    as_floats = [item.embedding for item in floats.data]
    assert all(isinstance(v, float) for vector in as_floats for v in vector)
    decoded = [_floats(item.embedding) for item in packed.data]
    for got, want in zip(decoded, as_floats, strict=True):  # float32: 7 digits survive
        assert got == pytest.approx(want, rel=1e-6)
    if model == "answers-embed":  # the fake's vectors: the text's length, then halves
        rest = [0.5] * (fake_gemini.EMBEDDING_SIZE - 1)
        assert decoded == [[1.0, *rest], [2.0, *rest]]
    assert [item.index for item in packed.data] == [0, 1]
    assert packed.usage.prompt_tokens > 0


async def test_an_unknown_encoding_format_is_a_400(routed: Stack) -> None:
    async with httpx.AsyncClient(base_url=routed.tail_url, timeout=30) as http:
        answer = await http.post(
            "/v1/embeddings",
            json={"model": "demo", "input": "a", "encoding_format": "int8"},
            headers={"Authorization": f"Bearer {routed.api_key}"},
        )
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == "encoding_format"


async def test_an_empty_litellm_stream_is_the_providers_failure(routed: Stack) -> None:
    """An Anthropic deployment that answers 200 and closes before its first event, reached
    through litellm (chat completions): litellm made up a ``stop`` chunk, and the client got a
    successful empty answer, no failover. It now fails over like the native path does, and
    without a fallback is a 502."""
    client = _client(routed)
    try:
        stream = await client.chat.completions.create(
            model="answers-empty", messages=[{"role": "user", "content": "rescued"}], stream=True
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert "rescued" in text  # the fallback's echo
        with pytest.raises(openai.APIStatusError) as failed:
            await client.chat.completions.create(
                model="answers-empty-only",
                messages=[{"role": "user", "content": "x"}],
                stream=True,
            )
        # A content answer still streams as before.
        ok = await client.chat.completions.create(
            model="answers-claude", messages=[{"role": "user", "content": "x"}], stream=True
        )
        said = "".join([c.choices[0].delta.content or "" async for c in ok if c.choices])
    finally:
        await client.close()
    assert failed.value.status_code == 502
    assert "ended its stream" in failed.value.message
    assert said == "".join(REPLY)


async def test_legacy_completions_litellm_cannot_serve_as_asked_are_refused(
    routed: Stack,
) -> None:
    """``n`` = 2 and a list of prompts on a litellm provider came back as one choice: OpenAI
    answers n choices, one set per prompt. Each is now a 400 naming the field."""
    client = _client(routed)
    try:
        with pytest.raises(openai.BadRequestError) as several:
            await client.completions.create(model="answers-claude", prompt="hi", n=2)
        with pytest.raises(openai.BadRequestError) as listed:
            await client.completions.create(model="answers-claude", prompt=["one", "two"])
        one = await client.completions.create(model="answers-claude", prompt=["only one"])
    finally:
        await client.close()
    assert several.value.status_code == 400
    assert several.value.param == "n"
    assert listed.value.param == "prompt"
    assert "one prompt per request" in listed.value.message
    assert [c.text for c in one.choices] == ["".join(REPLY)]


async def test_a_deadline_passed_while_the_provider_worked_is_billed(routed: Stack) -> None:
    """A deadline that ran out during the provider call (``X-Request-Timeout``, or the OpenAI
    SDK's ``timeout=``) was answered 504 and never billed, though the provider worked on it
    (three times over, with the SDK's retries). It is now billed an estimate, as a call
    whose client left."""
    api_key, record = await routed.new_key("deadline-billing")
    async with httpx.AsyncClient(base_url=routed.tail_url, timeout=30) as http:
        answer = await http.post(
            "/v1/chat/completions",
            json={"model": "answers-late", "messages": [{"role": "user", "content": "late"}]},
            headers={"Authorization": f"Bearer {api_key}", "X-Request-Timeout": "2"},
        )
    assert answer.status_code == 504, answer.text
    assert answer.json()["error"]["code"] == "deadline_exceeded"
    spend = await _key_usage(routed, record.id)
    assert spend["requests"] == 1
    assert spend["prompt_tokens"] > 0
    assert spend["completion_tokens"] == 0


async def _key_usage(stack: Stack, key_id: str) -> dict[str, Any]:
    """Today's spend row of ``key_id`` once it counts a request (failing after 15 s)."""
    deadline = time.monotonic() + 15
    while True:
        days = (await stack.admin("GET", "/spend?days=1")).json()["days"]
        rows = [r for r in days if r.get("key") == key_id]
        if rows and rows[0]["requests"] >= 1:
            return dict(rows[0])
        assert time.monotonic() < deadline, f"key {key_id} was never billed"
        await asyncio.sleep(0.2)
