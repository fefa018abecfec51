"""What a client of the litellm path reads: answers in OpenAI's shape, against the fake Anthropic
and Gemini servers over real HTTP (the fixtures of tests/test_litellm_adapter.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletionChunk

from switchyard.workers.modelproxy.providers.litellm_adapter import LiteLLM
from tests import test_litellm_adapter as base
from tests.fakes import anthropic as fake_anthropic
from tests.fakes import gemini as fake_gemini
from tests.test_litellm_adapter import Upstream, call_for, collect

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:Items? .* using the `ReadOnly` qualifier:UserWarning"),
]

# The fixtures of tests/test_litellm_adapter.py: the adapter, and each fake provider in turn.
adapter = base.adapter
upstream = base.upstream

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "strict": True,
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}},
        },
    },
]
# OpenAI's fields, per level (openai.types.chat.ChatCompletionChunk), and reasoning_content.
CHUNK_FIELDS = {
    "id",
    "object",
    "created",
    "model",
    "system_fingerprint",
    "service_tier",
    "choices",
    "usage",
}
CHUNK_CHOICE_FIELDS = {"index", "delta", "finish_reason", "logprobs"}
DELTA_FIELDS = {"role", "content", "refusal", "tool_calls", "function_call", "reasoning_content"}


def _calls_made(kind: str) -> list[tuple[str, dict[str, Any]]]:
    if kind == "anthropic":
        return [(name, json.loads("".join(parts))) for _, name, parts in fake_anthropic.TOOL_CALLS]
    return list(fake_gemini.TOOL_CALLS)


def _nulls(value: object, path: str = "") -> list[str]:
    if value is None:
        return [path]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _nulls(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _nulls(v, f"{path}[{i}]")]
    return []


async def _chunks(adapter: LiteLLM, up: Upstream, model: str, **body: Any) -> list[dict[str, Any]]:
    events = await collect(adapter, call_for(up, model, stream=True, **body))
    return [json.loads(e.payload) for e in events if e.payload is not None]


async def test_a_streamed_tool_call_names_itself_once(adapter: LiteLLM, upstream: Upstream) -> None:
    """The npm `openai` SDK's stream helper threw "changed tool call identity" on every
    Anthropic stream that called a tool: each later piece of a call came as
    `{"id": null, "function": {"name": null, ...}, "type": "function"}`, and every delta
    carried `role: null`, `function_call: null`, `audio: null`, `provider_specific_fields`.
    A call's first piece names it (id, type, name), later ones carry index and arguments
    only, as OpenAI streams them; nothing is null in a delta, and no field is litellm's."""
    chunks = await _chunks(adapter, upstream, "tools", tools=TOOLS)

    seen: set[int] = set()
    for chunk in chunks:
        assert set(chunk) <= CHUNK_FIELDS, chunk
        for choice in chunk["choices"]:
            assert set(choice) <= CHUNK_CHOICE_FIELDS, choice
            delta = choice["delta"]
            assert set(delta) <= DELTA_FIELDS, delta
            assert not _nulls(delta), chunk
            for piece in delta.get("tool_calls") or ():
                if piece["index"] in seen:
                    assert set(piece) == {"index", "function"}, piece
                    assert set(piece["function"]) == {"arguments"}, piece
                else:
                    seen.add(piece["index"])
                    assert piece["id"], piece
                    assert piece["type"] == "function", piece
                    assert piece["function"]["name"], piece
    assert seen == {0, 1}

    # The OpenAI SDK's own accumulation of the stream gives the calls the model made.
    state = ChatCompletionStreamState()
    for chunk in chunks:
        state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    [choice] = state.get_final_completion().choices
    calls = choice.message.tool_calls or []
    made = [(c.function.name, json.loads(c.function.arguments)) for c in calls]
    assert made == _calls_made(upstream.kind)
    assert len({c.id for c in calls}) == 2
    assert choice.finish_reason == "tool_calls"
