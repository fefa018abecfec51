"""Prompt-cache tokens, read wherever usage is read: in the prompt (token counts and TPM see the
whole prompt) and apart (cache reads and writes are priced apart), never shown to a client in a
shape OpenAI's API does not have."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import msgspec
import pytest

from switchyard.config import prepare_litellm_environment
from switchyard.dialects._chat import decode
from switchyard.schemas.events import (
    USAGE_BATCH_DECODER,
    USAGE_BATCH_ENCODER,
    UsageBatch,
    UsageEvent,
)
from switchyard.schemas.openai import Usage, usage_of
from switchyard.workers.modelproxy.providers import litellm_adapter
from switchyard.workers.modelproxy.providers.base import ProviderCall
from switchyard.workers.modelproxy.providers.demo import Demo
from tests.unit.demo_calls import demo_call

pytestmark = [
    pytest.mark.unit,
    # litellm's types build pydantic schemas for TypedDicts marked ReadOnly on first use, and
    # pydantic warns that it cannot enforce ReadOnly (as in test_litellm_adapter).
    pytest.mark.filterwarnings("ignore:Items? .* using the `ReadOnly` qualifier:UserWarning"),
]

# OpenAI's chat usage with a cache hit: 80 of the 100 prompt tokens came from the cache.
OPENAI_USAGE = {
    "prompt_tokens": 100,
    "completion_tokens": 5,
    "total_tokens": 105,
    "prompt_tokens_details": {"cached_tokens": 80, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 0},
}


def test_openai_cached_tokens_are_read_apart() -> None:
    body = json.dumps({"id": "c", "choices": [], "usage": OPENAI_USAGE}).encode()
    assert usage_of(body) == Usage(
        prompt_tokens=100, completion_tokens=5, total_tokens=105, cache_read_tokens=80
    )
    assert decode(body).usage is not None
    assert decode(body).usage.triple() == usage_of(body)  # type: ignore[union-attr]


def test_an_openai_compatible_server_in_front_of_anthropic() -> None:
    """litellm's proxy (and servers like it) put Anthropic's names beside the triple."""
    usage = {
        "prompt_tokens": 101010,
        "completion_tokens": 10,
        "total_tokens": 101020,
        "cache_read_input_tokens": 100000,
        "cache_creation_input_tokens": 1000,
    }
    body = json.dumps({"usage": usage}).encode()
    expected = Usage(
        prompt_tokens=101010,
        completion_tokens=10,
        total_tokens=101020,
        cache_read_tokens=100000,
        cache_write_tokens=1000,
    )
    assert usage_of(body) == expected
    assert decode(body).usage.triple() == expected  # type: ignore[union-attr]


def test_cache_counts_never_exceed_the_prompt() -> None:
    usage = {"prompt_tokens": 50, "completion_tokens": 1, "total_tokens": 51}
    usage |= {"cache_read_input_tokens": 40, "cache_creation_input_tokens": 40}
    counted = usage_of(json.dumps({"usage": usage}).encode())
    assert counted is not None
    assert (counted.cache_read_tokens, counted.cache_write_tokens) == (40, 10)
    negative = {"prompt_tokens": 5, "prompt_tokens_details": {"cached_tokens": -3}}
    assert usage_of(json.dumps({"usage": negative}).encode()) == Usage(prompt_tokens=5)


def test_usage_without_cache_counts_reads_as_before() -> None:
    body = b'{"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}'
    assert usage_of(body) == Usage(prompt_tokens=3, completion_tokens=4, total_tokens=7)
    assert usage_of(b'{"usage":{"prompt_tokens":"x"}}') is None  # malformed: no usage


def _litellm_anthropic_response() -> dict[str, Any]:
    """What litellm 's Anthropic transformation really makes of a cache-reading reply, dumped
    as the adapter dumps it."""
    prepare_litellm_environment()
    from litellm.llms.anthropic.chat.transformation import AnthropicConfig
    from litellm.types.utils import ModelResponse

    reported = {
        "input_tokens": 10,
        "cache_read_input_tokens": 100000,
        "cache_creation_input_tokens": 1000,
        "output_tokens": 10,
    }
    response = ModelResponse(model="claude-sonnet-4-5")
    response.usage = AnthropicConfig().calculate_usage(reported, None)  # type: ignore[attr-defined]
    dumped: dict[str, Any] = response.model_dump(mode="json")
    return dumped


def test_litellm_reports_anthropic_cache_tokens_and_they_are_read() -> None:
    doc = _litellm_anthropic_response()
    assert doc["usage"]["prompt_tokens"] == 101010  # litellm folds them into the prompt
    assert litellm_adapter._usage(doc) == Usage(
        prompt_tokens=101010,
        completion_tokens=10,
        total_tokens=101020,
        cache_read_tokens=100000,
        cache_write_tokens=1000,
    )


def test_litellm_reports_openai_cached_tokens_and_they_are_read() -> None:
    prepare_litellm_environment()
    from litellm.types.utils import Usage as LitellmUsage

    usage = LitellmUsage(
        prompt_tokens=100,
        completion_tokens=5,
        total_tokens=105,
        prompt_tokens_details={"cached_tokens": 80},
    )
    doc = {"usage": usage.model_dump(mode="json")}
    assert litellm_adapter._usage(doc) == Usage(
        prompt_tokens=100, completion_tokens=5, total_tokens=105, cache_read_tokens=80
    )
    junk = {"usage": {"prompt_tokens": 4, "cache_read_input_tokens": "lots"}}
    assert litellm_adapter._usage(junk) == Usage(prompt_tokens=4, total_tokens=4)


def test_usage_events_carry_the_cache_counts_and_old_events_still_decode() -> None:
    event = UsageEvent(
        id="r:1",
        request_id="r",
        ts=1.0,
        op="chat",
        alias="a",
        deployment="d",
        provider="p",
        model="m",
        prompt_tokens=110,
        cache_read_tokens=100,
        cache_write_tokens=5,
    )
    batch = USAGE_BATCH_DECODER.decode(
        USAGE_BATCH_ENCODER.encode(UsageBatch(id="b", events=[event]))
    )
    assert batch.events == [event]
    old = msgspec.json.encode({"id": "b", "events": [{**msgspec.to_builtins(event)}]})
    stripped = json.loads(old)
    for e in stripped["events"]:
        del e["cache_read_tokens"], e["cache_write_tokens"]
    (decoded,) = USAGE_BATCH_DECODER.decode(json.dumps(stripped).encode()).events
    assert (decoded.cache_read_tokens, decoded.cache_write_tokens) == (0, 0)


def _demo_call(stream: bool) -> ProviderCall:
    messages = [{"role": "user", "content": "one two three"}]
    return demo_call("chat", stream=stream, wants_usage=True, messages=messages)


def test_the_demo_provider_shows_clients_openai_usage_only() -> None:
    async def run() -> tuple[dict[str, Any], dict[str, Any]]:
        demo = Demo()
        whole = json.loads((await demo.complete(_demo_call(False))).body)
        chunks = [e async for e in demo.stream(_demo_call(True))]
        last = json.loads(chunks[-1].payload or b"{}")
        return whole["usage"], last["usage"]

    for usage in asyncio.run(run()):
        assert set(usage) == {"prompt_tokens", "completion_tokens", "total_tokens"}
