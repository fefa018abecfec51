"""Request fields litellm would leave out or change without a word, per provider: refused (or
mapped) before anything is sent. Real HTTP against the fake Anthropic and Gemini servers, as in
tests/test_litellm_adapter.py (whose helpers these tests reuse)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from switchyard.errors import InvalidRequest
from tests.fakes import anthropic as fake_anthropic
from tests.fakes import gemini as fake_gemini
from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.gemini import FakeGemini
from tests.test_litellm_adapter import Upstream, _usage, adapter, call_for, failure

__all__ = ["adapter"]  # the fixture, shared with the adapter's own tests

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:Items? .* using the `ReadOnly` qualifier:UserWarning"),
]


def tool(name: str, **extra: Any) -> dict[str, Any]:
    params = {"type": "object", "properties": {"x": {"type": "string"}}}
    return {"type": "function", "function": {"name": name, "parameters": params, **extra}}


@pytest_asyncio.fixture(loop_scope="session")
async def gemini() -> AsyncIterator[Upstream]:
    fake = FakeGemini()
    tokens = (fake_gemini.PROMPT_TOKENS, len(fake_gemini.REPLY))
    up = Upstream("gemini", fake, await fake.start(), "", _usage(*tokens), "x-goog-api-key")
    yield up
    await fake.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def anthropic() -> AsyncIterator[Upstream]:
    fake = FakeAnthropic()
    tokens = (fake_anthropic.INPUT_TOKENS, fake_anthropic.OUTPUT_TOKENS)
    up = Upstream("anthropic", fake, await fake.start(), "", _usage(*tokens), "x-api-key")
    yield up
    await fake.stop()


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_anthropic_refuses_json_mode_and_keeps_json_schema(
    adapter: Any, anthropic: Upstream, stream: bool
) -> None:
    """litellm sent Anthropic nothing for `response_format: {"type": "json_object"}` (no JSON
    mode there) and the answer was free text. Refused now; a JSON schema still maps."""
    json_mode = {"type": "json_object"}
    call = call_for(anthropic, "ok", stream=stream, response_format=json_mode)
    exc = await failure(adapter, call)
    assert isinstance(exc, InvalidRequest)
    assert (exc.param, exc.code) == ("response_format.type", "unsupported_value")
    assert not anthropic.fake.calls
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    spec = {"type": "json_schema", "json_schema": {"name": "out", "schema": schema}}
    await adapter.complete(call_for(anthropic, "ok", response_format=spec))
    [arrived] = anthropic.fake.calls
    assert [t["name"] for t in arrived.body["tools"]] == ["json_tool_call"]


async def test_fields_litellm_is_not_given_are_refused_unless_platform_only(
    adapter: Any, anthropic: Upstream, gemini: Upstream
) -> None:
    """The adapter passed litellm only the fields it lists, and left the rest out unseen:
    `top_k` and `thinking` came back as if not sent. Refused now, naming them; OpenAI's
    platform-only fields (`store`, `metadata`, its prompt cache's) and `verbosity` (Codex
    sends it; it only steers an answer's length) are left out, and the call is made."""
    for up in (anthropic, gemini):
        exc = await failure(adapter, call_for(up, "ok", thinking={"type": "x"}, top_k=5))
        assert isinstance(exc, InvalidRequest)
        assert (exc.param, exc.code) == ("thinking", "unsupported_parameter")
        assert exc.message.startswith(f"`thinking`, `top_k`: provider fake-{up.kind}")
        assert not up.fake.calls
        await adapter.complete(
            call_for(
                up,
                "ok",
                store=True,
                metadata={"tag": "x"},
                prompt_cache_key="k",
                prompt_cache_retention="24h",
                verbosity="low",
            )
        )
        [arrived] = up.fake.calls
        assert "tag" not in str(arrived.body)


async def test_safety_identifier_reaches_anthropic_as_the_end_user(
    adapter: Any, anthropic: Upstream
) -> None:
    """`safety_identifier` (OpenAI's successor to `user`) was left out; it goes on as
    Anthropic's `metadata.user_id`, as `user` does, and wins over `user`."""
    await adapter.complete(call_for(anthropic, "ok", safety_identifier="sid-1"))
    await adapter.complete(call_for(anthropic, "ok", safety_identifier="sid-2", user="u-2"))
    await adapter.complete(call_for(anthropic, "ok", user="u-3"))
    ids = [call.body["metadata"]["user_id"] for call in anthropic.fake.calls]
    assert ids == ["sid-1", "sid-2", "u-3"]


async def test_a_strict_tool_is_taken_not_refused(
    adapter: Any, anthropic: Upstream, gemini: Upstream
) -> None:
    """A tool's `strict: true` reaches neither Anthropic nor Gemini; it is sent on without the
    flag rather than refused, as OpenAI's Agents SDK marks every tool strict."""
    tools = [tool("a"), tool("b", strict=True)]
    for up in (anthropic, gemini):
        await adapter.complete(call_for(up, "ok", tools=tools))
        assert len(up.fake.calls) == 1


@pytest.mark.parametrize(
    "choice",
    ["bogus", {"type": "function"}, {"type": "function", "function": {"name": ""}}, 3],
    ids=["word", "no-function", "empty-name", "number"],
)
async def test_tool_choice_is_checked_alike_for_every_provider(
    adapter: Any, anthropic: Upstream, gemini: Upstream, choice: Any
) -> None:
    """`tool_choice: "bogus"` was a 200 from Claude (litellm sent no choice) and, from
    Gemini, a 400 in litellm's words ("litellm.UnsupportedParamsError: VertexAI doesn't
    support..."). Both are now the same 400 naming tool_choice, nothing sent; OpenAI's
    values still go through."""
    for up in (anthropic, gemini):
        exc = await failure(adapter, call_for(up, "ok", tools=[tool("a")], tool_choice=choice))
        assert isinstance(exc, InvalidRequest)
        assert (exc.param, exc.code) == ("tool_choice", "invalid_value")
        assert "litellm" not in exc.message
        assert "VertexAI" not in exc.message
        assert not up.fake.calls
        named = {"type": "function", "function": {"name": "a"}}
        for good in ("auto", "required", "none", named):
            await adapter.complete(call_for(up, "ok", tools=[tool("a")], tool_choice=good))
        assert len(up.fake.calls) == 4


async def test_a_claude_model_litellm_does_not_know_gets_a_cap_it_takes(
    adapter: Any, anthropic: Upstream
) -> None:
    """For a client that set no max_tokens litellm sent a Claude model missing from its
    bundled map `max_tokens: 128000`, which Anthropic refuses above a model's own limit
    (8,192 for Claude 3.5 Haiku): every such request failed. Such a model gets 4,096; a
    model litellm knows keeps its limit from the map, and a client's own cap is sent."""
    await adapter.complete(call_for(anthropic, "claude-3-5-haiku-20241022"))
    await adapter.complete(call_for(anthropic, "claude-3-5-haiku-20241022", max_tokens=9))
    await adapter.complete(call_for(anthropic, "ok", op="complete", prompt="hi"))
    await adapter.complete(call_for(anthropic, "ok", max_completion_tokens=12))
    await adapter.complete(call_for(anthropic, "claude-sonnet-4-5"))
    caps = [call.body["max_tokens"] for call in anthropic.fake.calls]
    assert caps == [4096, 9, 4096, 12, 64000]


SCHEMA = {
    "type": "json_schema",
    "json_schema": {"name": "out", "schema": {"type": "object", "properties": {}}},
}


async def test_a_schema_beside_tools_is_refused_where_litellm_would_force_its_tool(
    adapter: Any, anthropic: Upstream
) -> None:
    """To a Claude model without structured output, litellm answers a JSON schema through
    its own tool and forces it (`tool_choice`), tools or not: the client's tools were never
    called, with a 200. Refused now, naming response_format; a model with structured output
    (claude-sonnet-4-5) takes both, and so does the forced tool without tools of the client."""
    call = call_for(
        anthropic, "claude-3-5-haiku-20241022", tools=[tool("a")], response_format=SCHEMA
    )
    exc = await failure(adapter, call)
    assert isinstance(exc, InvalidRequest)
    assert (exc.param, exc.code) == ("response_format", "unsupported_value")
    assert not anthropic.fake.calls
    await adapter.complete(
        call_for(anthropic, "claude-sonnet-4-5", tools=[tool("a")], response_format=SCHEMA)
    )
    await adapter.complete(call_for(anthropic, "claude-3-5-haiku-20241022", response_format=SCHEMA))
    # A model that thinks gets litellm's tool offered beside the client's, not forced.
    thinking = call_for(
        anthropic,
        "claude-3-7-sonnet-20250219",
        tools=[tool("a")],
        response_format=SCHEMA,
        reasoning_effort="low",
    )
    await adapter.complete(thinking)
    native, forced, offered = anthropic.fake.calls
    assert "tool_choice" not in offered.body
    assert "output_format" in native.body
    assert native.body.get("tool_choice") is None
    assert forced.body["tool_choice"] == {"name": "json_tool_call", "type": "tool"}
