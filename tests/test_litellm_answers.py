"""What a client of the litellm path reads: answers in OpenAI's shape, against the fake Anthropic
and Gemini servers over real HTTP (the fixtures of tests/test_litellm_adapter.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from switchyard.errors import ProviderUnreachable
from switchyard.workers.modelproxy.providers.litellm_adapter import LiteLLM
from tests import test_litellm_adapter as base
from tests.fakes import anthropic as fake_anthropic
from tests.fakes import gemini as fake_gemini
from tests.test_litellm_adapter import Upstream, call_for, collect
from tests.upstream import FakeOpenAI

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


MESSAGE_FIELDS = {
    "role",
    "content",
    "refusal",
    "tool_calls",
    "function_call",
    "audio",
    "annotations",
    "reasoning_content",
}


async def test_a_whole_answer_is_in_openais_shape(adapter: LiteLLM, upstream: Upstream) -> None:
    """A whole answer carried litellm's own keys (`provider_specific_fields` with
    `citations`/`thinking_blocks`, Gemini's `vertex_ai_*`, `images`, `thinking_blocks`),
    explicit nulls (`function_call`, `tool_calls`), and Claude's tool calls had litellm's
    `index` (the content block's: 1 for the first call after text), which OpenAI's whole
    answers do not have. Gemini's `id` was its responseId, not `chatcmpl-...`."""
    body = json.loads((await adapter.complete(call_for(upstream, "tools", tools=TOOLS))).body)

    assert set(body) <= CHUNK_FIELDS, body
    assert body["id"].startswith("chatcmpl-")
    assert body["object"] == "chat.completion"
    [choice] = body["choices"]
    assert set(choice) == {"index", "message", "finish_reason", "logprobs"}
    assert (choice["index"], choice["finish_reason"], choice["logprobs"]) == (0, "tool_calls", None)
    message = choice["message"]
    assert set(message) <= MESSAGE_FIELDS, message
    assert not _nulls(message), message
    assert not _nulls(body["usage"]), body["usage"]
    assert message["role"] == "assistant"
    assert message["content"] == upstream.reply
    calls = message["tool_calls"]
    assert all(set(c) == {"id", "type", "function"} for c in calls), calls
    made = [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls]
    assert made == _calls_made(upstream.kind)
    if upstream.kind == "anthropic":
        assert [c["id"] for c in calls] == [i for i, _, _ in fake_anthropic.TOOL_CALLS]


async def test_streamed_and_whole_answers_name_the_same_model(
    adapter: LiteLLM, upstream: Upstream
) -> None:
    """Gemini's whole answer named its `modelVersion` ("ok-001" from the fake, as Gemini
    names a version of the model asked for) while its stream named the deployment's model;
    both name the deployment's now, and the id reads `chatcmpl-...`, one per stream."""
    whole = json.loads((await adapter.complete(call_for(upstream, "ok"))).body)
    chunks = await _chunks(adapter, upstream, "ok")

    assert whole["model"] == "ok"
    assert {c["model"] for c in chunks} == {"ok"}
    [stream_id] = {c["id"] for c in chunks}
    for answer_id in (whole["id"], stream_id):
        assert answer_id.startswith("chatcmpl-")

    legacy = json.loads(
        (await adapter.complete(call_for(upstream, "ok", op="complete", prompt="hi"))).body
    )
    pieces = await _chunks(adapter, upstream, "ok", op="complete", prompt="hi")
    assert legacy["model"] == "ok"
    assert {c["model"] for c in pieces} == {"ok"}
    for choice in [*legacy["choices"], *(c for p in pieces for c in p["choices"])]:
        assert set(choice) == {"index", "text", "logprobs", "finish_reason"}, choice
        assert isinstance(choice["text"], str)


async def test_reasoning_and_claudes_thinking_blocks_are_passed(
    adapter: LiteLLM, upstream: Upstream
) -> None:
    """`reasoning_content` is what the Messages and Responses translations read;
    `thinking_blocks` (Claude's thinking with its signature) is what litellm needs back on
    the next turn (test_a_second_turn_sends_claudes_thinking_back); litellm's
    `provider_specific_fields` stays out."""
    if upstream.kind != "anthropic":
        pytest.skip("the fake Gemini does not think")
    thought = "".join(fake_anthropic.THOUGHT)
    block = {"type": "thinking", "thinking": thought, "signature": fake_anthropic.SIGNATURE}
    whole = json.loads((await adapter.complete(call_for(upstream, "thinks"))).body)
    chunks = await _chunks(adapter, upstream, "thinks")

    message = whole["choices"][0]["message"]
    assert set(message) == {"role", "content", "reasoning_content", "thinking_blocks"}, message
    assert (message["reasoning_content"], message["content"]) == (thought, upstream.reply)
    assert message["thinking_blocks"] == [block]
    deltas = [c["delta"] for chunk in chunks for c in chunk["choices"]]
    assert all(set(d) <= DELTA_FIELDS | {"thinking_blocks"} for d in deltas), deltas
    assert "".join(d.get("reasoning_content", "") for d in deltas) == thought
    assert "".join(d.get("content", "") for d in deltas) == upstream.reply
    # The OpenAI SDK's accumulation of the stream gives the block whole, signed.
    state = ChatCompletionStreamState()
    for chunk in chunks:
        state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    streamed = state.get_final_completion().choices[0].message.model_dump(exclude_unset=True)
    assert [{k: b[k] for k in block} for b in streamed["thinking_blocks"]] == [block]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_a_second_turn_sends_claudes_thinking_back(
    adapter: LiteLLM, upstream: Upstream, stream: bool
) -> None:
    """An openai-python agent loop with `reasoning_effort` and tools appends the answer's
    message as it came (`messages.append(resp.choices[0].message)`) and sends the tool's
    result. The message had lost `thinking_blocks`, so litellm sent Claude an assistant turn
    calling tools with no thinking block while thinking was on, and Anthropic refused it
    (400 "Expected `thinking` or `redacted_thinking`, but found `tool_use`"): every such
    loop broke on its second turn. The thinking goes back now, signed, before the calls."""
    if upstream.kind != "anthropic":
        pytest.skip("the fake Gemini does not think")
    if stream:
        state = ChatCompletionStreamState()
        for chunk in await _chunks(adapter, upstream, "thinks-tools", tools=TOOLS):
            state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
        answer: ChatCompletion = state.get_final_completion()
    else:
        call = call_for(upstream, "thinks-tools", tools=TOOLS)
        answer = ChatCompletion.model_validate(json.loads((await adapter.complete(call)).body))
    message = answer.choices[0].message
    # What openai-python sends of a message object it is given (its _transform).
    sent_back = message.model_dump(mode="json", exclude_unset=True, exclude={"parsed"})
    results = [
        {"role": "tool", "tool_call_id": c.id, "content": "sunny"} for c in message.tool_calls or ()
    ]
    second = call_for(
        upstream,
        "claude-sonnet-4-5",  # a model litellm knows thinks: reasoning_effort turns it on
        tools=TOOLS,
        reasoning_effort="low",
        messages=[*base.PROMPT, sent_back, *results],
    )

    body = json.loads((await adapter.complete(second)).body)

    assert body["choices"][0]["message"]["content"] == upstream.reply
    arrived = upstream.fake.calls[-1].body
    assert arrived["thinking"]["type"] == "enabled"
    turn = arrived["messages"][1]
    assert [b["type"] for b in turn["content"]] == ["thinking", "text", "tool_use", "tool_use"]
    assert turn["content"][0] == {
        "type": "thinking",
        "thinking": "".join(fake_anthropic.THOUGHT),
        "signature": fake_anthropic.SIGNATURE,
    }


@pytest.mark.parametrize("wants_usage", [False, True], ids=["no-usage", "usage"])
async def test_every_streamed_choice_ends_with_a_finish_reason(
    adapter: LiteLLM, wants_usage: bool
) -> None:
    """Gemini with `n: 2`, streamed: litellm sent a `role` and a `finish_reason` for the
    first choice only; the second never ended (the npm `openai` SDK's stream helper: "missing
    finish_reason for choice 1", then "missing role"). Every choice opens with its role and
    ends now, before the usage chunk."""
    fake = fake_gemini.FakeGemini()
    up = Upstream("gemini", fake, await fake.start(), "", base._usage(0, 0), "x-goog-api-key")
    try:
        options: dict[str, Any] = {"stream_options": {"include_usage": True}} if wants_usage else {}
        events = await collect(
            adapter, call_for(up, "ok", stream=True, wants_usage=wants_usage, n=2, **options)
        )
    finally:
        await fake.stop()
    chunks = [json.loads(e.payload) for e in events if e.payload is not None]

    texts = {0: "", 1: ""}
    ends: list[tuple[int, str]] = []
    for chunk in chunks:
        for choice in chunk["choices"]:
            if not texts[choice["index"]]:  # the choice's first delta
                assert choice["delta"]["role"] == "assistant", chunk
            texts[choice["index"]] += choice["delta"].get("content") or ""
            if choice["finish_reason"] is not None:
                ends.append((choice["index"], choice["finish_reason"]))
    assert texts == {0: "".join(fake_gemini.REPLY), 1: "".join(fake_gemini.REPLY)}
    assert sorted(ends) == [(0, "stop"), (1, "stop")]
    assert len({c["id"] for c in chunks}) == 1
    if wants_usage:
        assert "usage" in chunks[-1]
        assert chunks[-1]["choices"] == []


async def test_each_streamed_choice_numbers_its_tool_calls_from_zero(adapter: LiteLLM) -> None:
    """Gemini with `n: 2` and tools, streamed: litellm numbered the second choice's calls 2
    and 3 (on from the first choice's), where OpenAI numbers each choice's from 0; the npm
    SDK's stream helper failed reading `tool_calls[2]` of a choice that had none."""
    fake = fake_gemini.FakeGemini()
    up = Upstream("gemini", fake, await fake.start(), "", base._usage(0, 0), "x-goog-api-key")
    try:
        chunks = await _chunks(adapter, up, "tools", tools=TOOLS, n=2)
    finally:
        await fake.stop()

    state = ChatCompletionStreamState()
    for chunk in chunks:
        for choice in chunk["choices"]:
            indexes = [c["index"] for c in choice["delta"].get("tool_calls") or ()]
            assert indexes in ([], [0, 1]), chunk
        state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    choices = state.get_final_completion().choices
    assert [c.finish_reason for c in choices] == ["tool_calls", "tool_calls"]
    for choice in choices:
        calls = choice.message.tool_calls or []
        made = [(c.function.name, json.loads(c.function.arguments)) for c in calls]
        assert made == list(fake_gemini.TOOL_CALLS)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_an_unreachable_provider_is_said_plainly(
    adapter: LiteLLM, upstream: Upstream, stream: bool
) -> None:
    """A refused connection read `ConnectError: Cannot connect to host 127.0.0.1:9
    ssl:<ssl.SSLContext object at 0x7f0d...> [Connect call failed ('127.0.0.1', 9)]`."""
    closed = upstream.base.replace(upstream.base.split("/")[2], "127.0.0.1:9")  # discard port
    with pytest.raises(ProviderUnreachable) as failed:
        await base.run(adapter, call_for(upstream, "ok", base=closed, stream=stream))

    assert failed.value.message == (
        f"provider fake-{upstream.kind} is unreachable: cannot connect to 127.0.0.1:9 "
        "(connection refused)"
    )


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_a_provider_that_drops_the_connection_is_not_called_unreachable(
    adapter: LiteLLM, upstream: Upstream, stream: bool
) -> None:
    """A provider that hung up mid-stream (or before a whole answer) read `is unreachable:
    cannot connect to 127.0.0.1:<port>`: litellm reports aiohttp's ClientPayloadError and
    ServerDisconnectedError as httpx's ReadError, and its request's address was taken for
    one that could not be reached. It says what the direct path says now."""
    if upstream.kind != "anthropic":
        pytest.skip("the fake Gemini does not drop connections")
    with pytest.raises(ProviderUnreachable) as failed:
        await base.run(adapter, call_for(upstream, "dropped", stream=stream))

    assert failed.value.message == (
        "provider fake-anthropic closed the connection before its answer was complete"
    )
    assert failed.value.code == "provider_disconnected"  # it was reached: not "unreachable"


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_one_tool_call_per_answer_is_held_to(
    adapter: LiteLLM, upstream: Upstream, stream: bool
) -> None:
    """`parallel_tool_calls: false`: Gemini has no such setting (litellm sent it nothing) and
    answered both calls; the answer keeps the first, whole or streamed, as OpenAI's would.
    Without the field both come back."""
    first = _calls_made(upstream.kind)[0][0]
    for one, expected in ((True, [first]), (False, [n for n, _ in _calls_made(upstream.kind)])):
        extra: dict[str, Any] = {"parallel_tool_calls": False} if one else {}
        if stream:
            chunks = await _chunks(adapter, upstream, "tools", tools=TOOLS, **extra)
            state = ChatCompletionStreamState()
            for chunk in chunks:
                state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
            message = state.get_final_completion().choices[0].message
            names = [c.function.name for c in message.tool_calls or ()]
        else:
            call = call_for(upstream, "tools", tools=TOOLS, **extra)
            body = json.loads((await adapter.complete(call)).body)
            names = [c["function"]["name"] for c in body["choices"][0]["message"]["tool_calls"]]
        assert names == expected, (one, names)


# (litellm's own warning when it strips a usage chunk: see tests/test_litellm_adapter.py)
@pytest.mark.filterwarnings("ignore:Accessing the 'model_(computed_)?fields' attribute")
@pytest.mark.parametrize("model", ["openai/midreason", "callsfirst"])
async def test_only_a_choices_last_chunk_says_its_finish_reason(
    adapter: LiteLLM, model: str
) -> None:
    """OpenAI's streams say a choice's ``finish_reason`` in its last chunk only (null before),
    and a client SDK may stop reading at the first it sees. A provider whose every chunk says
    one (``midreason``, through litellm's OpenAI path), and Gemini's tool calls before its
    text (litellm gives their event ``tool_calls``): one ``finish_reason``, last, and the whole
    answer before it. (The litellm in use holds these itself; the adapter no longer relies on
    it: tests/unit/test_litellm_answer.py has the chunks it held passed on.)"""
    if model == "callsfirst":
        gemini = fake_gemini.FakeGemini()
        up = Upstream("gemini", gemini, await gemini.start(), "", base._usage(0, 0), "")
        try:
            chunks = await _chunks(adapter, up, model, wants_usage=True, tools=TOOLS)
        finally:
            await gemini.stop()
    else:
        fake = FakeOpenAI()
        fake.start()
        up = Upstream("litellm", fake, fake.base_url, "", base._usage(0, 0), "")  # type: ignore[arg-type]
        try:
            chunks = await _chunks(adapter, up, model, wants_usage=True)
        finally:
            fake.stop()
    said = [
        (i, c["finish_reason"])
        for i, chunk in enumerate(chunks)
        for c in chunk["choices"]
        if c["finish_reason"] is not None
    ]
    last = max(i for i, chunk in enumerate(chunks) if chunk["choices"])
    expected = "tool_calls" if model == "callsfirst" else "stop"
    assert said == [(last, expected)], chunks
    state = ChatCompletionStreamState()
    for chunk in chunks:
        state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    answer = state.get_final_completion().choices[0]
    assert answer.finish_reason == expected
    assert answer.message.content in ("echo: Say hello", "".join(fake_gemini.REPLY[1:]))


# (litellm's own warning when it strips a usage chunk: see tests/test_litellm_adapter.py)
@pytest.mark.filterwarnings("ignore:Accessing the 'model_(computed_)?fields' attribute")
async def test_a_failure_after_a_whole_answer_still_ends_it_with_its_finish_reason(
    adapter: LiteLLM,
) -> None:
    """The whole answer and its ``finish_reason`` came (held for the stream's last chunk),
    then the provider's read failed (an error event, no usage, no end): the stream ends as
    whole, as when the grace after a whole answer runs out, its reason said. The failure
    was raised and the held reason never went out: a stream without its finish chunk."""
    fake = FakeOpenAI()
    fake.start()
    up = Upstream("litellm", fake, fake.base_url, "", base._usage(0, 0), "")  # type: ignore[arg-type]
    try:
        chunks = await _chunks(adapter, up, "openai/endfail")
    finally:
        fake.stop()
    said = [c["finish_reason"] for chunk in chunks for c in chunk["choices"] if c["finish_reason"]]
    assert said == ["stop"], chunks
    text = "".join(c["delta"].get("content", "") for chunk in chunks for c in chunk["choices"])
    assert text == "echo: Say hello", chunks
