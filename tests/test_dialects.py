"""The APIs agents speak, through both edges with the official SDKs: OpenAI Responses and
Anthropic Messages, translated for chat providers and passed through to native ones, under the
same keys, limits and spend as chat completions."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest
import pytest_asyncio

from switchyard.runtime import semconv as sc
from tests.fakes.anthropic import COUNTED, INPUT_TOKENS, OUTPUT_TOKENS, REPLY, FakeAnthropic
from tests.stacks import Stack, start_stack
from tests.support import day_totals
from tests.upstream import NATIVE_COUNT, FakeOpenAI

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}

# A route's own price with a cache-read price: $1 per million prompt tokens, $0.10 per million
# read from the cache, $2 per million completion tokens.
CACHE_PRICE = {"input_per_token": 1e-6, "output_per_token": 2e-6, "cache_read_per_token": 1e-7}

# The same tool in Anthropic's shape.
_WEATHER_TOOL = {
    "name": WEATHER["name"],
    "description": WEATHER["description"],
    "input_schema": WEATHER["parameters"],
}


@pytest.fixture(scope="module")
def claude(claude_fake: tuple[FakeAnthropic, str]) -> str:
    return claude_fake[1]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def agents(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI, claude: str
) -> AsyncIterator[Stack]:
    extra = {
        # Tests here send one request after another to routes whose only deployment fails
        # midway, which cools it (docs/routing.md): cooldowns end at once.
        "routing": {"cooldown_s": 0.01},
        "providers": {
            "chat-only": {"kind": "openai-compatible", "api_base": upstream.base_url},
            "openai-native": {"kind": "openai", "api_base": upstream.base_url},
            "anthropic-native": {"kind": "anthropic", "api_base": claude},
            # With a key (stored below): litellm will not call Anthropic without one.
            "anthropic-keyed": {"kind": "anthropic", "api_base": claude, "secret": "claude-fake"},
        },
        "routes": {
            "translated": {"deployments": [{"provider": "chat-only", "model": "echo"}]},
            "native-responses": {"deployments": [{"provider": "openai-native", "model": "o"}]},
            "native-messages": {"deployments": [{"provider": "anthropic-native", "model": "ok"}]},
            "cut-anthropic": {"deployments": [{"provider": "anthropic-native", "model": "cut"}]},
            "html-anthropic": {
                "deployments": [{"provider": "anthropic-native", "model": "html"}],
                "fallbacks": ["native-messages"],
            },
            "empty-anthropic": {
                "deployments": [{"provider": "anthropic-native", "model": "empty"}],
                "fallbacks": ["native-messages"],
            },
            # A deployment of its own, so its traffic is only what one test sends.
            "counted": {"deployments": [{"provider": "chat-only", "model": "jitter:1-2"}]},
            "midfail": {"deployments": [{"provider": "chat-only", "model": "midfail"}]},
            "cutshort": {"deployments": [{"provider": "chat-only", "model": "cutshort"}]},
            "nousage": {"deployments": [{"provider": "chat-only", "model": "nousage"}]},
            "batched": {"deployments": [{"provider": "chat-only", "model": "batched:8"}]},
            "latename": {"deployments": [{"provider": "chat-only", "model": "latename"}]},
            "thinkcall": {"deployments": [{"provider": "chat-only", "model": "thinkcall"}]},
            "bigchunk": {"deployments": [{"provider": "chat-only", "model": "bigchunk:600"}]},
            # Prompt-cache hits, billed at the cache price: litellm's for Claude, the route's
            # own for the others.
            "cached-claude": {
                "deployments": [{"provider": "anthropic-keyed", "model": "claude-sonnet-4-5"}]
            },
            "cached-claude-writes": {
                "deployments": [
                    {"provider": "anthropic-keyed", "model": "claude-sonnet-4-5-20250929"}
                ]
            },
            "cached-chat": {
                "deployments": [
                    {"provider": "chat-only", "model": "cached:1000", "price": CACHE_PRICE}
                ]
            },
            "cached-responses": {
                "deployments": [
                    {"provider": "openai-native", "model": "cached:1000", "price": CACHE_PRICE}
                ]
            },
        },
    }
    stack = await start_stack(tmp_path_factory.mktemp("agents"), extra)
    try:
        stored = await stack.admin(
            "PUT", "/secrets/claude-fake", {"value": "sk-ant-fake-0123456789"}
        )
        assert stored.status_code in (200, 201), stored.text
        yield stack
    finally:
        await stack.supervisor.stop()


@pytest.fixture(params=["tail", "gateway"])
def edge(request: pytest.FixtureRequest, agents: Stack) -> str:
    return agents.tail_url if request.param == "tail" else agents.gateway_url


_open: list[openai.OpenAI | anthropic.Anthropic] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    """Every SDK client a test makes is closed after it (an open one leaks its sockets)."""
    yield
    while _open:
        _open.pop().close()


def _openai(stack: Stack, base: str, key: str | None = None) -> openai.OpenAI:
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=key or stack.api_key, max_retries=0)
    _open.append(client)
    return client


def _anthropic(stack: Stack, base: str, key: str | None = None) -> anthropic.Anthropic:
    client = anthropic.Anthropic(base_url=base, api_key=key or stack.api_key, max_retries=0)
    _open.append(client)
    return client


# ---- OpenAI Responses ----


def test_responses_translated_for_a_chat_provider(agents: Stack, edge: str) -> None:
    client = _openai(agents, edge)
    response = client.responses.create(
        model="translated", instructions="be brief", input="hello there"
    )
    assert response.output_text == "echo: hello there"
    assert response.usage is not None
    assert response.usage.input_tokens == 7
    assert response.usage.output_tokens == 3


def test_responses_stream_translated(agents: Stack, edge: str) -> None:
    client = _openai(agents, edge)
    events = list(client.responses.create(model="translated", input="one two", stream=True))
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created"
    assert kinds[-1] == "response.completed"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "echo: one two"
    completed = events[-1]
    assert completed.type == "response.completed"
    assert completed.response.usage is not None
    assert completed.response.usage.output_tokens == 3
    assert [e.sequence_number for e in events] == list(range(len(events)))


def test_responses_tool_call_round_trip(agents: Stack, edge: str) -> None:
    client = _openai(agents, edge)
    first = client.responses.create(
        model="translated",
        input="weather in Paris?",
        tools=[WEATHER],  # type: ignore[list-item]
    )
    [call] = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather"
    assert call.arguments == '{"city": "Paris"}'
    second = client.responses.create(
        model="translated",
        input=[
            {"role": "user", "content": "weather in Paris?"},
            {
                "type": "function_call",
                "call_id": call.call_id,
                "name": call.name,
                "arguments": call.arguments,
            },
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
        ],
        tools=[WEATHER],  # type: ignore[list-item]
    )
    assert second.output_text.startswith("echo:")
    with client.responses.stream(
        model="translated",
        input="weather?",
        tools=[WEATHER],  # type: ignore[list-item]
    ) as stream:
        final = stream.get_final_response()
    [streamed] = [item for item in final.output if item.type == "function_call"]
    assert streamed.arguments == '{"city": "Paris"}'


def test_responses_passed_through_to_a_native_provider(
    agents: Stack, edge: str, upstream: FakeOpenAI
) -> None:
    client = _openai(agents, edge)
    response = client.responses.create(model="native-responses", input="as is")
    assert response.output_text == "native: as is"
    assert upstream.calls_for("o")[-1].path == "/v1/responses"
    events = list(client.responses.create(model="native-responses", input="x y", stream=True))
    assert events[-1].type == "response.completed"
    assert (
        "".join(e.delta for e in events if e.type == "response.output_text.delta") == "native: x y"
    )


def test_responses_state_that_needs_storage_is_refused(agents: Stack, edge: str) -> None:
    client = _openai(agents, edge)
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="translated", input="hi", previous_response_id="resp_1")
    assert caught.value.status_code == 400
    assert caught.value.body["param"] == "previous_response_id"  # type: ignore[index]


def test_developer_messages_reach_a_non_openai_chat_server_as_system(
    agents: Stack, upstream: FakeOpenAI
) -> None:
    """SDKs send ``developer`` for reasoning-model names (the Vercel AI SDK for any `o3-*`
    alias); vLLM's, Ollama's and other servers' chat templates do not know the role. A native
    OpenAI deployment keeps it."""
    client = _openai(agents, agents.tail_url)
    messages: Any = [
        {"role": "developer", "content": "be brief"},
        {"role": "user", "content": "hi"},
    ]
    for model, role in (("translated", "system"), ("native-responses", "developer")):
        client.chat.completions.create(model=model, messages=messages)
        sent = upstream.calls[-1].body["messages"]
        assert [m["role"] for m in sent] == [role, "user"], model
        assert sent[0]["content"] == "be brief"


# ---- Anthropic Messages ----


def test_messages_translated_for_a_chat_provider(agents: Stack, edge: str) -> None:
    client = _anthropic(agents, edge)
    message = client.messages.create(
        model="translated",
        max_tokens=64,
        system="be brief",
        messages=[{"role": "user", "content": "hello claude"}],
    )
    assert message.content[0].type == "text"
    assert message.content[0].text == "echo: hello claude"
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (7, 3)


def test_messages_stream_translated_and_native(agents: Stack, edge: str) -> None:
    client = _anthropic(agents, edge)
    for model, text in (("translated", "echo: a b"), ("native-messages", "".join(REPLY))):
        with client.messages.stream(
            model=model, max_tokens=64, messages=[{"role": "user", "content": "a b"}]
        ) as stream:
            streamed = "".join(stream.text_stream)
            final = stream.get_final_message()
        assert streamed == text
        assert final.content[0].text == text  # type: ignore[union-attr]
    assert final.usage.output_tokens == OUTPUT_TOKENS


def test_a_translated_message_stream_opens_with_the_prompt_estimate(agents: Stack) -> None:
    """``message_start`` said ``input_tokens: 0`` (chat servers report usage at the end), which
    Claude Code reads to track its context: it now shows the prompt's estimate, and the final
    ``message_delta`` the provider's count (the fake's 7), which the SDK's message keeps."""
    client = _anthropic(agents, agents.tail_url)
    prompt = "a longer prompt, " * 40
    with client.messages.stream(
        model="translated", max_tokens=64, messages=[{"role": "user", "content": prompt}]
    ) as stream:
        seen = list(stream)
        final = stream.get_final_message()
    start = next(e for e in seen if e.type == "message_start")
    delta = next(e for e in seen if e.type == "message_delta")
    assert start.message.usage.input_tokens > len(prompt) // 8  # ~4 bytes a token
    assert delta.usage.input_tokens == 7
    assert final.usage.input_tokens == 7


def test_messages_tool_use_translated(agents: Stack, edge: str) -> None:
    client = _anthropic(agents, edge)
    tool = {
        "name": "get_weather",
        "description": "Current weather in a city",
        "input_schema": WEATHER["parameters"],
    }
    message = client.messages.create(
        model="translated",
        max_tokens=64,
        tools=[tool],  # type: ignore[list-item]
        messages=[{"role": "user", "content": "weather in Paris?"}],
    )
    assert message.stop_reason == "tool_use"
    [use] = [block for block in message.content if block.type == "tool_use"]
    assert use.name == "get_weather"
    assert use.input == {"city": "Paris"}


def test_a_tool_call_named_after_its_first_fragment_streams_whole(agents: Stack) -> None:
    """A chat server that names a streamed tool call after its id and first arguments
    (litellm's Gemini): Messages opened the tool_use block named "" and dropped the name;
    Responses announced a nameless function_call (a custom tool's call stayed one)."""
    client = _anthropic(agents, agents.tail_url)
    with client.messages.stream(
        model="latename",
        max_tokens=64,
        tools=[_WEATHER_TOOL],  # type: ignore[list-item]
        messages=[{"role": "user", "content": "weather in Paris?"}],
    ) as stream:
        message = stream.get_final_message()
    [use] = [block for block in message.content if block.type == "tool_use"]
    assert (use.id, use.name, use.input) == ("call_fake1", "get_weather", {"city": "Paris"})
    body = {"model": "latename", "input": "weather in Paris?", "tools": [WEATHER], "stream": True}
    headers = {"Authorization": f"Bearer {agents.api_key}"}
    with httpx.stream(
        "POST", f"{agents.tail_url}/v1/responses", json=body, headers=headers, timeout=30
    ) as resp:
        assert resp.status_code == 200, resp.read()
        events = [json.loads(line[6:]) for line in resp.iter_lines() if line.startswith("data:")]
    added = [e["item"] for e in events if e["type"] == "response.output_item.added"]
    assert [(i["type"], i["name"]) for i in added] == [("function_call", "get_weather")]
    assert events[-1]["type"] == "response.completed"
    [call] = events[-1]["response"]["output"]
    assert (call["type"], call["name"]) == ("function_call", "get_weather")
    assert call["arguments"] == '{"city": "Paris"}'


def test_reasoning_inside_a_tool_calls_arguments_leaves_the_call_whole(agents: Stack) -> None:
    """Reasoning between a tool call's argument fragments (thinking enabled) opened a thinking
    block, which ended the call's: Claude Code got ``{"_raw_arguments": '{"city": '}``. The
    call stays whole and the reasoning follows it as a thinking block."""
    client = _anthropic(agents, agents.tail_url)
    # Named at once (the reasoning comes while the call's block is open), or named late (it
    # comes before the block opens, and leads).
    for model, order in (("thinkcall", ["tool_use", "thinking"]), ("latename", None)):
        with client.messages.stream(
            model=model,
            max_tokens=2048,
            thinking={"type": "enabled", "budget_tokens": 1024},
            tools=[_WEATHER_TOOL],  # type: ignore[list-item]
            messages=[{"role": "user", "content": "weather in Paris?"}],
        ) as stream:
            message = stream.get_final_message()
        kinds = [block.type for block in message.content]
        assert kinds == (order or ["thinking", "tool_use"]), (model, kinds)
        [use] = [block for block in message.content if block.type == "tool_use"]
        [thought] = [block for block in message.content if block.type == "thinking"]
        assert (use.name, use.input) == ("get_weather", {"city": "Paris"})
        assert thought.thinking == "The city is Paris."
        assert message.stop_reason == "tool_use"


def test_an_interrupted_agent_turn_reaches_a_chat_server_as_alternating_roles(
    agents: Stack, upstream: FakeOpenAI
) -> None:
    """Claude Code's history after an interrupted turn (an assistant turn with only a thinking
    block, then the user's next words): the chat server gets one user message, not two in a
    row that alternating chat templates refuse."""
    client = _anthropic(agents, agents.tail_url)
    message = client.messages.create(
        model="translated",
        max_tokens=64,
        messages=[
            {"role": "user", "content": "fix the bug"},
            {
                "role": "assistant",
                "content": [{"type": "thinking", "thinking": "Hmm.", "signature": "sig"}],
            },
            {"role": "user", "content": [{"type": "text", "text": "go on"}]},
        ],
    )
    assert message.content
    sent = upstream.calls[-1].body["messages"]
    assert [m["role"] for m in sent] == ["user"]
    assert sent[0]["content"] == [
        {"type": "text", "text": "fix the bug"},
        {"type": "text", "text": "go on"},
    ]


def test_a_system_turn_inside_a_tool_run_reaches_a_chat_server_after_the_results(
    agents: Stack, upstream: FakeOpenAI
) -> None:
    """A developer message between a function call and its output (Responses) or a system turn
    between ``tool_use`` and ``tool_result`` (Messages) reached the chat server between the
    assistant's tool_calls and its tool message, which OpenAI refuses: it now follows the
    tool messages."""
    _openai(agents, agents.tail_url).responses.create(
        model="translated",
        input=[
            {"role": "user", "content": "weather in Paris?"},
            {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"},
            {"role": "developer", "content": "answer in French"},
            {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
        ],
    )
    expected = ["user", "assistant", "tool", "system"]
    assert [m["role"] for m in upstream.calls[-1].body["messages"]] == expected
    _anthropic(agents, agents.tail_url).messages.create(
        model="translated",
        max_tokens=64,
        messages=[
            {"role": "user", "content": "weather in Paris?"},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "c1", "name": "get_weather", "input": {}}],
            },
            {"role": "system", "content": "answer in French"},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "c1"}]},
        ],
    )
    assert [m["role"] for m in upstream.calls[-1].body["messages"]] == expected


def test_messages_passed_through_to_anthropic(agents: Stack, edge: str) -> None:
    message = _anthropic(agents, edge).messages.create(
        model="native-messages", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
    )
    assert message.content[0].text == "".join(REPLY)  # type: ignore[union-attr]
    assert (message.usage.input_tokens, message.usage.output_tokens) == (
        INPUT_TOKENS,
        OUTPUT_TOKENS,
    )
    # Anthropic's SDK reads the request's id from `request-id`: for a message, a stream and
    # an error alike.
    assert message._request_id
    streamed = _anthropic(agents, edge).messages.with_raw_response.create(
        model="native-messages",
        max_tokens=64,
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
    )
    assert streamed.headers["request-id"] == streamed.headers["x-request-id"]
    with pytest.raises(anthropic.NotFoundError) as missing:
        _anthropic(agents, edge).messages.create(
            model="no-such-model", max_tokens=8, messages=[{"role": "user", "content": "x"}]
        )
    assert missing.value.request_id == missing.value.response.headers["x-request-id"]


def test_messages_errors_in_anthropics_shape(agents: Stack, edge: str) -> None:
    with pytest.raises(anthropic.AuthenticationError) as auth:
        _anthropic(agents, edge, key="sk-sy-wrong").messages.create(
            model="translated", max_tokens=8, messages=[{"role": "user", "content": "x"}]
        )
    assert auth.value.body["type"] == "error"  # type: ignore[index]
    assert auth.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError) as bad:
        _anthropic(agents, edge).messages.create(
            model="translated",
            max_tokens=8,
            messages=[{"role": "user", "content": "x"}],
            extra_body={"max_tokens": "many"},
        )
    assert bad.value.status_code == 400


def test_count_tokens_passed_through_to_anthropic(agents: Stack, edge: str) -> None:
    """Anthropic counts for its own deployments: the fake answers COUNTED + messages."""
    count = _anthropic(agents, edge).messages.count_tokens(
        model="native-messages",
        messages=[
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "how many?"},
        ],
    )
    assert count.input_tokens == COUNTED + 3


def test_count_tokens_estimated_for_other_providers(agents: Stack, edge: str) -> None:
    """A chat-only provider cannot count: the model-proxy estimates with OpenAI's tokenizer,
    and the estimate follows what the request holds."""
    client = _anthropic(agents, edge)

    def count(**extra: Any) -> int:
        messages = extra.pop("messages", [{"role": "user", "content": "hi"}])
        return client.messages.count_tokens(
            model="translated", messages=messages, **extra
        ).input_tokens

    short = count()
    assert 5 <= short <= 20, short
    long = count(messages=[{"role": "user", "content": "word " * 1000}])
    assert 990 <= long - short <= 1_010, (short, long)
    assert count(system="You are a careful assistant who answers briefly.") > short + 5
    assert count(tools=[_WEATHER_TOOL]) > short + 10
    png = {"type": "base64", "media_type": "image/png", "data": "iVBO"}
    content = [{"type": "image", "source": png}, {"type": "text", "text": "hi"}]
    with_image = count(messages=[{"role": "user", "content": content}])
    assert with_image >= short + 1_500


def test_input_tokens_counted_by_openai_or_estimated(agents: Stack, edge: str) -> None:
    """OpenAI's ``responses.input_tokens.count``: OpenAI counts for its own deployments (the
    fake answers NATIVE_COUNT + the input's length), the model-proxy estimates for others."""
    client = _openai(agents, edge)
    native = client.responses.input_tokens.count(model="native-responses", input="count me")
    assert (native.object, native.input_tokens) == ("response.input_tokens", NATIVE_COUNT + 8)
    short = client.responses.input_tokens.count(model="translated", input="hi")
    assert short.object == "response.input_tokens"
    assert 5 <= short.input_tokens <= 20, short
    long = client.responses.input_tokens.count(
        model="translated",
        input="word " * 1000,
        instructions="be brief",
        tools=[WEATHER],  # type: ignore[list-item]
    )
    assert long.input_tokens >= short.input_tokens + 1_010, (short, long)
    with pytest.raises(openai.BadRequestError) as stateful:  # as for responses.create
        client.responses.input_tokens.count(
            model="translated", input="x", previous_response_id="resp_1"
        )
    assert stateful.value.body["param"] == "previous_response_id"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as no_model:  # optional at OpenAI; we route by it
        client.responses.input_tokens.count(input="x")
    assert no_model.value.body["param"] == "model"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        client.responses.input_tokens.count(model="no-such-model", input="x")


def test_counts_of_a_body_that_asks_for_a_stream_still_come_back(agents: Stack, edge: str) -> None:
    """Agents count the very body they are about to send, ``"stream": true`` included: a
    count is one answer whatever the body says (it was once served as a stream, and lost)."""
    messages: Any = [{"role": "user", "content": "how many?"}]
    native = _anthropic(agents, edge).messages.count_tokens(
        model="native-messages", messages=messages, extra_body={"stream": True}
    )
    assert native.input_tokens == COUNTED + 1
    estimated = _anthropic(agents, edge).messages.count_tokens(
        model="translated", messages=messages, extra_body={"stream": True}
    )
    assert 5 <= estimated.input_tokens <= 20, estimated
    counted = _openai(agents, edge).responses.input_tokens.count(
        model="native-responses", input="count me", extra_body={"stream": True}
    )
    assert counted.input_tokens == NATIVE_COUNT + 8


def test_count_tokens_errors_in_anthropics_shape(agents: Stack, edge: str) -> None:
    client = _anthropic(agents, edge)
    with pytest.raises(anthropic.NotFoundError) as unknown:
        client.messages.count_tokens(
            model="no-such-model", messages=[{"role": "user", "content": "x"}]
        )
    assert unknown.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    with pytest.raises(anthropic.AuthenticationError):
        _anthropic(agents, edge, key="sk-sy-wrong").messages.count_tokens(
            model="translated", messages=[{"role": "user", "content": "x"}]
        )
    empty = httpx.post(
        f"{edge}/v1/messages/count_tokens",
        json={"model": "translated"},
        headers={"x-api-key": agents.api_key},
        timeout=5,
    )
    assert empty.status_code == 400, empty.text
    assert empty.json()["type"] == "error"
    assert "messages" in empty.json()["error"]["message"]
    with pytest.raises(anthropic.BadRequestError) as server_tool:  # refused as for messages
        client.messages.count_tokens(
            model="translated",
            messages=[{"role": "user", "content": "x"}],
            tools=[{"type": "web_search_20250305", "name": "web_search"}],
        )
    assert "tools[0].type" in server_tool.value.body["error"]["message"]  # type: ignore[index]
    wrong_method = httpx.get(f"{edge}/v1/messages/count_tokens", timeout=5)
    assert wrong_method.status_code == 405, wrong_method.text
    assert wrong_method.json()["type"] == "error"


def test_unserved_messages_paths_answer_in_anthropics_shape(agents: Stack, edge: str) -> None:
    """A path under ``/v1/messages`` that Switchyard does not serve (Anthropic adds some now
    and then): the SDK must still read a ``not_found_error``, not an OpenAI-shaped body it
    cannot parse into its error. Other unknown paths stay OpenAI's."""
    client = _anthropic(agents, edge)
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.get("/v1/messages/not-a-thing", cast_to=httpx.Response)
    body = missing.value.body
    assert body["type"] == "error", body  # type: ignore[index]
    assert body["error"]["type"] == "not_found_error", body  # type: ignore[index]
    assert "/v1/messages/not-a-thing" in body["error"]["message"]  # type: ignore[index]
    wrong_method = httpx.get(f"{edge}/v1/messages", timeout=5)
    assert wrong_method.status_code == 405, wrong_method.text
    assert wrong_method.headers["allow"] == "POST"
    assert wrong_method.json()["error"]["type"] == "invalid_request_error"
    assert wrong_method.json()["type"] == "error"
    elsewhere = httpx.post(f"{edge}/v1/messagesx", json={}, timeout=5)
    assert elsewhere.status_code == 404
    assert elsewhere.json()["error"]["code"] == "not_found"  # OpenAI's shape


async def test_models_listed_in_anthropics_shape(agents: Stack) -> None:
    """Anthropic's SDK lists models at OpenAI's path, with its version header: it gets
    Anthropic's paged shape (the key's models only), and its errors in Anthropic's shape;
    a client without the header still gets OpenAI's list."""
    api_key, _ = await agents.new_key("anthropic-lister", models=["native-*", "translated"])
    for edge in (agents.tail_url, agents.gateway_url):
        an = _anthropic(agents, edge, api_key)
        listed = [m.id for m in an.models.list()]
        assert sorted(listed) == ["native-messages", "native-responses", "translated"], listed
        first = an.models.list(limit=2)
        assert [m.type for m in first.data] == ["model", "model"]
        assert first.has_more is True
        assert first.first_id == listed[0]
        assert first.last_id == listed[1]
        rest = an.models.list(limit=2, after_id=first.last_id)
        assert [m.id for m in rest.data] == listed[2:]
        assert rest.has_more is False
        back = an.models.list(limit=5, before_id=listed[2])
        assert [m.id for m in back.data] == listed[:2]
        assert back.has_more is False
        model = an.models.retrieve("translated")
        assert (model.id, model.display_name, model.lifecycle) == (
            "translated",
            "translated",
            "active",
        )
        assert model.created_at.year == 1970  # the release date is unknown: the epoch
        with pytest.raises(anthropic.NotFoundError) as hidden:
            an.models.retrieve("counted")  # exists, but not for this key
        assert hidden.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
        with pytest.raises(anthropic.BadRequestError) as bad:
            an.models.list(limit=0)
        assert bad.value.body["error"]["message"].startswith("limit: ")  # type: ignore[index]
        with pytest.raises(anthropic.BadRequestError) as cursor:
            an.models.list(after_id="counted")
        assert "after_id: no model `counted`" in cursor.value.body["error"]["message"]  # type: ignore[index]
        with pytest.raises(anthropic.AuthenticationError) as denied:
            _anthropic(agents, edge, "sk-sy-wrong").models.list()
        assert denied.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
        plain = _openai(agents, edge, api_key).models.list()
        assert plain.object == "list"
        assert {m.object for m in plain.data} == {"model"}


# ---- the same keys, limits and spend ----


async def test_limits_and_spend_apply_as_for_chat(agents: Stack) -> None:
    api_key, record = await agents.new_key("dialects", rpm=3)
    oa = _openai(agents, agents.tail_url, api_key)
    an = _anthropic(agents, agents.tail_url, api_key)
    oa.responses.create(model="translated", input="one")
    an.messages.create(
        model="translated", max_tokens=8, messages=[{"role": "user", "content": "two"}]
    )
    oa.chat.completions.create(model="translated", messages=[{"role": "user", "content": "three"}])
    with pytest.raises(anthropic.RateLimitError) as limited:
        an.messages.create(
            model="translated", max_tokens=8, messages=[{"role": "user", "content": "4"}]
        )
    assert limited.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    with pytest.raises(openai.RateLimitError):
        oa.responses.create(model="translated", input="five")
    spend = await _key_usage(agents, record.id)
    # Three answered requests, all billed to the key: 7 prompt tokens each, and 2 + 2 + 2
    # completion tokens ("echo: one", "echo: two", "echo: three").
    assert spend["requests"] == 3
    assert spend["prompt_tokens"] == 21
    assert spend["completion_tokens"] == 6


async def test_token_counts_are_not_billed(agents: Stack) -> None:
    """A count generates nothing: no spend and no usage record, for the estimate and for
    Anthropic's own count alike (the message after them is billed as usual)."""
    api_key, record = await agents.new_key("counting")
    an = _anthropic(agents, agents.tail_url, api_key)
    for model in ("translated", "native-messages"):
        assert (
            an.messages.count_tokens(
                model=model, messages=[{"role": "user", "content": "count me"}]
            ).input_tokens
            > 0
        )
    an.messages.create(
        model="translated", max_tokens=8, messages=[{"role": "user", "content": "two"}]
    )
    spend = await _key_usage(agents, record.id, at_least=1)
    assert spend["requests"] == 1, spend
    assert spend["prompt_tokens"] == 7, spend


async def test_token_counts_hold_no_tpm(agents: Stack) -> None:
    """A count generates nothing, so TPM neither refuses nor keeps its prompt: a key with a
    TPM of 300 counts a ~1,000-token prompt, several times, and can still send a message."""
    api_key, _ = await agents.new_key("counting-tpm", tpm=300)
    an = _anthropic(agents, agents.tail_url, api_key)
    oa = _openai(agents, agents.tail_url, api_key)
    prompt = "word " * 1000
    for _ in range(2):
        assert (
            an.messages.count_tokens(
                model="translated", messages=[{"role": "user", "content": prompt}]
            ).input_tokens
            > 1000
        )
        assert oa.responses.input_tokens.count(model="translated", input=prompt).input_tokens > 1000
    message = an.messages.create(
        model="translated", max_tokens=8, messages=[{"role": "user", "content": "still room"}]
    )
    assert message.content[0].text == "echo: still room"  # type: ignore[union-attr]


async def test_token_counts_are_not_deployment_traffic(agents: Stack) -> None:
    """The admin views and the fair scheduler's window read a deployment's traffic; counts,
    a few milliseconds each, would skew both, so only the message after them is counted."""
    an = _anthropic(agents, agents.tail_url)
    for _ in range(6):
        an.messages.count_tokens(model="counted", messages=[{"role": "user", "content": "n"}])
    an.messages.create(
        model="counted", max_tokens=8, messages=[{"role": "user", "content": "traffic"}]
    )
    [dep] = [
        d["id"]
        for d in (await agents.admin("GET", "/overview")).json()["deployments"]
        if "counted" in d["aliases"]
    ]

    async def served() -> int:
        points = (await agents.admin("GET", "/deployments/history?seconds=120")).json()
        return sum(point[3] for point in points["deployments"].get(dep, []))

    deadline = time.monotonic() + 10
    while await served() < 1:
        assert time.monotonic() < deadline, "the message never showed in the traffic"
        await asyncio.sleep(0.2)
    await asyncio.sleep(2.5)  # every model-proxy has reported since (once a second)
    assert await served() == 1


async def _key_usage(stack: Stack, key_id: str, at_least: int = 3) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:
        days = (await stack.admin("GET", "/spend?days=2")).json()["days"]
        mine = day_totals(days, "key", key_id)
        if mine.get("requests", 0) >= at_least:
            return mine
        assert time.monotonic() < deadline, days
        await asyncio.sleep(0.2)


def test_the_demo_model_bills_what_its_count_said(agents: Stack, edge: str) -> None:
    """The offline demo counts tokens as words: its count and its usage now agree (a
    newcomer saw 9 from the count and 1 in the usage for the same "Hello!")."""
    client = _anthropic(agents, edge)
    asked: dict[str, Any] = {
        "model": "demo",
        "system": "be brief",
        "messages": [{"role": "user", "content": "Hello there, demo!"}],
    }
    counted = client.messages.count_tokens(**asked).input_tokens
    made = client.messages.create(max_tokens=32, **asked)
    assert counted == made.usage.input_tokens == 5


def _events(edge: str, path: str, body: dict[str, Any], headers: dict[str, str]) -> list[str]:
    """The SSE event names of a streamed answer, in order."""
    with httpx.stream("POST", f"{edge}{path}", json=body, headers=headers, timeout=30) as resp:
        assert resp.status_code == 200, resp.read()
        return [line[6:].strip() for line in resp.iter_lines() if line.startswith("event:")]


def test_a_failure_mid_stream_ends_each_dialect_once(agents: Stack, edge: str) -> None:
    """A provider that reports a failure inside its stream (``data: {"error": ...}``, as
    OpenAI and vLLM do): each client learns of it once, in its own dialect, and never reads
    a normal ending (before, the translations ended the answer as complete)."""
    prompt = [{"role": "user", "content": "x"}]
    anthropic_headers = {"x-api-key": agents.api_key, "anthropic-version": "2023-06-01"}
    body = {"model": "midfail", "max_tokens": 16, "stream": True, "messages": prompt}
    events = _events(edge, "/v1/messages", body, anthropic_headers)
    assert "content_block_delta" in events, events
    assert events.count("error") == 1, events
    assert events[-1] == "error", events
    assert "message_stop" not in events
    bearer = {"Authorization": f"Bearer {agents.api_key}"}
    body = {"model": "midfail", "input": "x", "stream": True}
    events = _events(edge, "/v1/responses", body, bearer)
    assert "response.output_text.delta" in events, events
    assert events.count("error") == 1, events
    assert events[-1] == "response.failed", events
    assert "response.completed" not in events
    stream = _openai(agents, edge).chat.completions.create(
        model="midfail",
        messages=[{"role": "user", "content": "x"}],
        stream=True,
    )
    with pytest.raises(openai.APIError, match="upstream broke mid-answer"):
        for _ in stream:
            pass


def test_a_long_stream_line_arrives_whole(agents: Stack, edge: str) -> None:
    """One 600 KiB chunk (past aiohttp's 512 KiB line limit, which made it a 500 and an
    unbilled answer) reaches chat and translated clients whole."""
    size = 600 * 1024
    stream = _openai(agents, edge).chat.completions.create(
        model="bigchunk", messages=[{"role": "user", "content": "x"}], stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "x" * size
    with _anthropic(agents, edge).messages.stream(
        model="bigchunk", max_tokens=16, messages=[{"role": "user", "content": "x"}]
    ) as answer:
        assert "".join(answer.text_stream) == "x" * size


def test_anthropic_beta_reaches_anthropic(
    agents: Stack, edge: str, claude_fake: tuple[FakeAnthropic, str]
) -> None:
    """Claude Code and ``client.beta.messages`` send ``anthropic-beta``; the fields it turns
    on mean nothing to Anthropic without it."""
    fake, _ = claude_fake
    betas = ["token-efficient-tools-2025-02-19", "interleaved-thinking-2025-05-14"]
    _anthropic(agents, edge).beta.messages.create(
        model="native-messages",
        max_tokens=8,
        messages=[{"role": "user", "content": "hi"}],
        betas=betas,
    )
    sent = {k.lower(): v for k, v in fake.calls[-1].headers.items()}
    assert sent.get("anthropic-beta") == ",".join(betas)
    plain = _anthropic(agents, edge).messages.create(
        model="native-messages", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
    )
    assert plain.content
    assert "anthropic-beta" not in {k.lower() for k in fake.calls[-1].headers}
    refused = httpx.post(
        f"{edge}/v1/messages",
        json={"model": "native-messages", "max_tokens": 8, "messages": [{"role": "user"}]},
        headers={"x-api-key": agents.api_key, "anthropic-beta": "no spaces; or semicolons"},
        timeout=10,
    )
    assert refused.status_code == 400, refused.text
    assert "anthropic-beta" in refused.json()["error"]["message"]


def test_a_stream_cut_short_is_not_passed_off_as_complete(agents: Stack, edge: str) -> None:
    """A provider whose stream ends with neither a finish_reason nor ``[DONE]`` cut the
    answer: clients get an error at its end, not a normal ending (and it is not billed as a
    complete answer)."""
    stream = _openai(agents, edge).chat.completions.create(
        model="cutshort", messages=[{"role": "user", "content": "x"}], stream=True
    )
    with pytest.raises(openai.APIError, match="ended its stream before the answer was complete"):
        for _ in stream:
            pass
    body = {"model": "cutshort", "max_tokens": 16, "stream": True}
    body["messages"] = [{"role": "user", "content": "x"}]
    headers = {"x-api-key": agents.api_key, "anthropic-version": "2023-06-01"}
    events = _events(edge, "/v1/messages", body, headers)
    assert "content_block_delta" in events, events
    assert events[-1] == "error", events


def test_a_native_stream_cut_short_is_an_error_or_goes_elsewhere(agents: Stack, edge: str) -> None:
    """Anthropic's stream passed through as it comes: one that stops before ``message_stop``
    ended for the client as if complete (the SDK's final message had no stop_reason), and one
    that closed before its first event was an empty 200 the route's fallback never saw."""
    headers = {"x-api-key": agents.api_key, "anthropic-version": "2023-06-01"}
    body = {"model": "cut-anthropic", "max_tokens": 16, "stream": True}
    body["messages"] = [{"role": "user", "content": "x"}]
    events = _events(edge, "/v1/messages", body, headers)
    assert "content_block_delta" in events, events
    assert events[-1] == "error", events
    assert "message_stop" not in events
    cut = _anthropic(agents, edge).messages.create(
        model="cut-anthropic",
        max_tokens=16,
        messages=[{"role": "user", "content": "x"}],
        stream=True,
    )
    with pytest.raises(anthropic.APIStatusError, match="no message_stop event"):
        list(cut)
    # Nothing sent yet: the attempt failed and the fallback answered.
    with _anthropic(agents, edge).messages.stream(
        model="empty-anthropic", max_tokens=16, messages=[{"role": "user", "content": "x"}]
    ) as stream:
        message = stream.get_final_message()
    assert message.stop_reason == "end_turn"
    assert "".join(b.text for b in message.content if b.type == "text") == "".join(REPLY)


async def test_answers_without_a_count_are_billed_by_estimate(agents: Stack) -> None:
    """A stream that failed or was cut after sending content, and a server that reports no
    usage, were billed zero tokens: such traffic never reached a key's budget. Each is now
    billed an estimate (a chunk a token, a quarter token per byte of prompt or answer)."""
    api_key, record = await agents.new_key("uncounted")
    client = openai.AsyncOpenAI(base_url=f"{agents.tail_url}/v1", api_key=api_key, max_retries=0)
    try:
        for model in ("midfail", "cutshort"):
            stream = await client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "x"}], stream=True
            )
            with pytest.raises(openai.APIError):
                async for _ in stream:
                    pass
        await client.chat.completions.create(
            model="nousage", messages=[{"role": "user", "content": "x"}]
        )
        streamed = await client.chat.completions.create(
            model="nousage", messages=[{"role": "user", "content": "x"}], stream=True
        )
        async for _ in streamed:
            pass
    finally:
        await client.close()
    spend = await _key_usage(agents, record.id, at_least=4)
    assert spend["requests"] == 4
    assert spend["prompt_tokens"] >= 4  # each request's prompt, estimated
    # Two words streamed before each failure, two chunks ("echo:", "x") streamed, and a whole
    # answer of 7 bytes of text.
    assert spend["completion_tokens"] >= 2 + 2 + 2 + 2


# The same 7-word answer, asked for in each dialect, streamed and not, from a server that
# reports no usage.
_ASKED = "one two three four five six"
_NOUSAGE: dict[str, tuple[str, dict[str, Any]]] = {
    "chat": ("/v1/chat/completions", {"messages": [{"role": "user", "content": _ASKED}]}),
    "messages": (
        "/v1/messages",
        {"max_tokens": 64, "messages": [{"role": "user", "content": _ASKED}]},
    ),
    "responses": ("/v1/responses", {"input": _ASKED}),
}


async def _nousage(
    agents: Stack, dialect: str, stream: bool, model: str = "nousage"
) -> tuple[httpx.Response, dict[str, Any]]:
    """The answer to the 7-word request in ``dialect``, and its key's spend."""
    api_key, record = await agents.new_key(f"{model}-{dialect}-{stream}")
    path, body = _NOUSAGE[dialect]
    headers = {"authorization": f"Bearer {api_key}", "anthropic-version": "2023-06-01"}
    async with httpx.AsyncClient(timeout=30) as client:
        answer = await client.post(
            agents.tail_url + path,
            json={"model": model, "stream": stream, **body},
            headers=headers,
        )
    assert answer.status_code == 200, answer.text
    return answer, await _key_usage(agents, record.id, at_least=1)


async def test_an_answer_without_usage_costs_the_same_in_every_dialect(agents: Stack) -> None:
    """A whole answer without the provider's count was billed a quarter token per byte of its
    JSON: the same 7-word answer ("echo: one two three four five six") cost 57 completion
    tokens as a chat completion, 63 as a Message and 177 as a Response, 8 streamed. It now
    costs its text (33 bytes: 9) whatever the dialect, about what its stream costs (a chunk a
    token)."""
    billed: dict[tuple[str, bool], float] = {}
    for dialect in _NOUSAGE:
        for stream in (False, True):
            _, spend = await _nousage(agents, dialect, stream)
            billed[dialect, stream] = spend["completion_tokens"]
    assert all(7 <= tokens <= 10 for tokens in billed.values()), billed


async def test_a_stream_without_usage_is_billed_the_text_it_delivered(agents: Stack) -> None:
    """A streamed answer without the provider's count was billed a completion token per chunk
    delivered: a server that sends many words a chunk (here 8 KiB of text in two chunks,
    ~2,000 tokens) was billed 3 tokens as a chat stream, 4 as a Messages or Responses one.
    Each is now billed a quarter token per byte of the text delivered, as a whole answer is."""
    billed: dict[str, float] = {}
    for dialect in _NOUSAGE:
        answer, spend = await _nousage(agents, dialect, True, model="batched")
        assert answer.text.count("word") >= 1600, answer.text[:200]
        billed[dialect] = spend["completion_tokens"]
    # 2 x 819 x "word " (and the space between the chunks): 8,191 bytes, 2,048 tokens.
    assert all(billed[d] == 2048 for d in billed), billed


async def test_messages_and_responses_show_the_estimate_they_are_billed(agents: Stack) -> None:
    """A translated answer from a server that reports no usage showed the client
    ``{"input_tokens": 0, "output_tokens": 0}`` (Messages, streamed or not) or ``usage: null``
    (Responses) while its key was billed an estimate: agents that size their context by
    ``usage.input_tokens`` (Claude Code's auto-compaction) read 0. Both now show the estimate,
    the figures their key is billed."""
    shown: dict[tuple[str, bool], tuple[int, int]] = {}
    billed: dict[tuple[str, bool], tuple[float, float]] = {}

    async def spend_of(dialect: str, stream: bool, key_id: str) -> None:
        spend = await _key_usage(agents, key_id, at_least=1)
        billed[dialect, stream] = (spend["prompt_tokens"], spend["completion_tokens"])

    asked: list[anthropic.types.MessageParam] = [{"role": "user", "content": _ASKED}]
    for stream in (False, True):
        api_key, record = await agents.new_key(f"shown-messages-{stream}")
        client = _anthropic(agents, agents.tail_url, api_key)
        message: anthropic.types.Message
        if stream:
            with client.messages.stream(model="nousage", max_tokens=64, messages=asked) as s:
                message = s.get_final_message()
        else:
            message = client.messages.create(model="nousage", max_tokens=64, messages=asked)
        assert message.content[0].type == "text"
        assert message.content[0].text == f"echo: {_ASKED}"
        shown["messages", stream] = (message.usage.input_tokens, message.usage.output_tokens)
        await spend_of("messages", stream, record.id)

        api_key, record = await agents.new_key(f"shown-responses-{stream}")
        oa = _openai(agents, agents.tail_url, api_key)
        if stream:
            events = list(oa.responses.create(model="nousage", input=_ASKED, stream=True))
            assert events[-1].type == "response.completed"
            response = events[-1].response
        else:
            response = oa.responses.create(model="nousage", input=_ASKED)
        assert response.output_text == f"echo: {_ASKED}"
        assert response.usage is not None
        assert response.usage.total_tokens == (
            response.usage.input_tokens + response.usage.output_tokens
        )
        shown["responses", stream] = (response.usage.input_tokens, response.usage.output_tokens)
        await spend_of("responses", stream, record.id)
    assert shown == billed, (shown, billed)
    assert all(prompt > 0 and 7 <= completion <= 10 for prompt, completion in shown.values())


def _answer_usage(
    client: openai.OpenAI, op: str, stream: bool, model: str = "nousage"
) -> tuple[openai.types.CompletionUsage | None, int]:
    """The usage ``client`` reads from a chat completion (``op`` "chat") or a legacy
    completion of ``_ASKED``, streamed with ``include_usage`` or not, and how many chunks
    carried usage (the last one, ``choices: []``, asserted so)."""
    if op == "chat":
        asked: dict[str, Any] = {"messages": [{"role": "user", "content": _ASKED}]}
        create: Any = client.chat.completions.create
    else:
        asked, create = {"prompt": _ASKED}, client.completions.create
    if not stream:
        answer = create(model=model, **asked)
        text = answer.choices[0].message.content if op == "chat" else answer.choices[0].text
        assert text == f"echo: {_ASKED}"
        return answer.usage, 0
    chunks = list(create(model=model, stream=True, stream_options={"include_usage": True}, **asked))
    counted = [chunk for chunk in chunks if chunk.usage is not None]
    assert counted == counted[-1:] == chunks[-1:], chunks  # one, the last, before [DONE]
    assert chunks[-1].choices == []
    assert chunks[-1].id == chunks[0].id
    assert chunks[-1].model == chunks[0].model
    return chunks[-1].usage, len(counted)


async def test_chat_and_completions_show_the_estimate_they_are_billed(
    agents: Stack, edge: str
) -> None:
    """A chat completion or legacy completion from a server that reports no usage reached
    its client without usage while its key was billed an estimate: a whole answer had no
    ``usage`` (an SDK's ``resp.usage.total_tokens`` raised), a stream asked with
    ``stream_options.include_usage`` ended without its usage chunk. Both now show the
    estimate, the figures their key is billed, marked ``"estimated": true``; a stream that did
    not ask gets no usage chunk, and a server's own usage is shown as it came, once."""
    shown: dict[tuple[str, bool], tuple[int, int]] = {}
    billed: dict[tuple[str, bool], tuple[float, float]] = {}
    for op in ("chat", "complete"):
        for stream in (False, True):
            api_key, record = await agents.new_key(f"shown-{op}-{stream}-{edge[-5:]}")
            usage, _ = _answer_usage(_openai(agents, edge, api_key), op, stream)
            assert usage is not None, (op, stream)
            assert usage.model_extra == {"estimated": True}, usage
            assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
            shown[op, stream] = (usage.prompt_tokens, usage.completion_tokens)
            spend = await _key_usage(agents, record.id, at_least=1)
            billed[op, stream] = (spend["prompt_tokens"], spend["completion_tokens"])
    assert shown == billed, (shown, billed)
    # "echo: one two three four five six": 33 bytes of text, 9 tokens, whole or streamed.
    assert all(prompt > 0 and completion == 9 for prompt, completion in shown.values()), shown
    oa = _openai(agents, edge)
    plain = oa.chat.completions.create(
        model="nousage", stream=True, messages=[{"role": "user", "content": _ASKED}]
    )
    assert all(chunk.usage is None for chunk in plain)  # not asked for: none sent
    counted, chunks = _answer_usage(oa, "chat", True, model="translated")  # the server's own
    assert counted is not None
    assert chunks == 1
    assert not counted.model_extra, counted
    assert (counted.prompt_tokens, counted.completion_tokens) == (7, 7)


async def test_the_edge_times_output_tokens_by_the_providers_count_only(agents: Stack) -> None:
    """The edge's time-per-output-token histogram divides a stream's time by its tokens:
    those of a stream its server did not count, asked with ``include_usage``, are
    Switchyard's estimate (the final's ``Sy-Usage``, marked ``Sy-Usage-Estimated``), and were
    timed as if the server had counted them. A counted stream is timed as before."""
    tpot = f"{sc.SERVER_TIME_PER_OUTPUT_TOKEN}_count"

    async def timed(model: str) -> float:
        samples = await agents.samples("tail")
        return sum(
            value
            for name, labels, value in samples
            if name == tpot and labels.get(sc.REQUEST_MODEL) == model
        )

    estimated, counted = await timed("nousage"), await timed("translated")
    oa = _openai(agents, agents.tail_url)
    usage, _ = _answer_usage(oa, "chat", True)
    assert usage is not None
    assert usage.model_extra == {"estimated": True}
    assert usage.completion_tokens > 1  # (timed, were it a count)
    _answer_usage(oa, "chat", True, model="translated")  # the server's own count
    for _ in range(100):  # the edge records a request once its answer ended
        if await timed("translated") > counted:
            break
        await asyncio.sleep(0.1)
    assert await timed("translated") == counted + 1
    assert await timed("nousage") == estimated


async def test_prompt_cache_tokens_are_billed_at_the_cache_price(agents: Stack) -> None:
    """A prompt read from (or written to) the provider's prompt cache was billed at the full
    input price: $0.30018 for a Claude reply Anthropic charges $0.03018 for. Every way usage
    arrives (Anthropic natively, through litellm, OpenAI chat and Responses) now carries the
    cache tokens to the bill, while token counts still hold the whole prompt."""
    api_key, record = await agents.new_key("cache-billing")
    an = _anthropic(agents, agents.tail_url, api_key)
    oa = _openai(agents, agents.tail_url, api_key)
    # Passed through to Anthropic: 10 input + 100,000 cache reads + 10 output tokens.
    message = an.messages.create(
        model="cached-claude", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
    )
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens) == (10, 100000)
    with an.messages.stream(
        model="cached-claude-writes",
        max_tokens=16,
        messages=[{"role": "user", "content": "hi"}],
    ) as stream:
        streamed = stream.get_final_message()
    assert streamed.usage.cache_creation_input_tokens == 1000
    # Through litellm (chat to an Anthropic deployment): the cache tokens are in the prompt.
    chat = oa.chat.completions.create(
        model="cached-claude", messages=[{"role": "user", "content": "hi"}]
    )
    assert chat.usage is not None
    assert chat.usage.prompt_tokens == 100010
    chunks = list(
        oa.chat.completions.create(
            model="cached-claude-writes",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
        )
    )
    assert chunks
    # OpenAI-shaped: 7 + 1,000 prompt tokens, 1,000 of them cached.
    plain = oa.chat.completions.create(
        model="cached-chat", messages=[{"role": "user", "content": "hi"}]
    )
    assert plain.usage is not None
    assert plain.usage.prompt_tokens == 1007
    assert plain.usage.model_dump(exclude_none=True).keys() == {
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "prompt_tokens_details",
    }
    oa.responses.create(model="cached-responses", input="hi")
    spend = await _key_usage(agents, record.id, at_least=6)
    # Each Claude prompt: 10 x $3 + 100,000 x $0.30 (+ 1,000 x $3.75 written) per million, and
    # 10 output tokens x $15 per million: $0.03018 (and $0.03393 with the write), not $0.30018
    # and $0.30318. The OpenAI-shaped ones at the route's price: 7 x $1 + 1,000 x $0.10 + 2 x $2
    # per million ("echo: hi") = $0.000111; Responses 5 x $1 + 1,000 x $0.10 + 2 x $2
    # ("native: hi") = $0.000109.
    by_alias = {
        "cached-claude": 2 * 30_180_000,
        "cached-claude-writes": 2 * 33_930_000,
        "cached-chat": 111_000,
        "cached-responses": 109_000,
    }
    days = (await agents.admin("GET", "/spend?days=2")).json()["days"]
    billed = {m: round(day_totals(days, "model", m).get("cost_usd", 0) * 1e9) for m in by_alias}
    assert billed == by_alias
    assert round(spend["cost_usd"] * 1e9) == sum(by_alias.values()) == 128_440_000
    # Token counts (and so TPM) still see every prompt token, cached or not.
    assert spend["prompt_tokens"] == 2 * 100010 + 2 * 101010 + 1007 + 1005
    shown = (await agents.admin("GET", f"/keys/{record.id}")).json()["spend"]
    assert round(shown["total_spend_usd"] * 1e9) == 128_440_000


async def test_a_native_stream_cut_after_its_opening_count_bills_what_was_sent(
    agents: Stack, edge: str
) -> None:
    """Anthropic's message_start already says 1 output token: a stream cut after it counted
    that, however much was delivered. It is billed what it delivered (its text, a quarter
    token per byte), when that is more."""
    api_key, record = await agents.new_key("cut-native")
    headers = {"x-api-key": api_key, "anthropic-version": "2023-06-01"}
    body = {"model": "cut-anthropic", "max_tokens": 16, "stream": True}
    body["messages"] = [{"role": "user", "content": "x"}]
    events = _events(edge, "/v1/messages", body, headers)
    delivered = len([e for e in events if e != "error"])
    assert delivered >= 3, events
    spend = await _key_usage(agents, record.id, at_least=1)
    assert spend["completion_tokens"] == -(-len(REPLY[0]) // 4) == 2  # "Hello", not 1


def test_a_streamed_answer_that_is_no_event_stream_goes_elsewhere(agents: Stack, edge: str) -> None:
    """A proxy's HTML page sent with 200 to a streamed native request was relayed line by
    line as events, then failed as cut short: garbage for the client and no fallback."""
    with _anthropic(agents, edge).messages.stream(
        model="html-anthropic", max_tokens=16, messages=[{"role": "user", "content": "x"}]
    ) as stream:
        message = stream.get_final_message()
    assert "".join(b.text for b in message.content if b.type == "text") == "".join(REPLY)
