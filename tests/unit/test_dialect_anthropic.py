"""The Anthropic Messages dialect: requests to chat, replies and streams back, errors.

Messages and stream events produced here are parsed with the official ``anthropic`` package's
types, whole streams are folded by its own accumulator (what ``client.messages.stream()`` uses),
and a real client runs against a mock HTTP transport that translates like the edge will.
"""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx2
import pydantic
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message, RawMessageStreamEvent
from anthropic.types.shared import ErrorResponse

from switchyard.dialects import probes, usage
from switchyard.dialects.anthropic import (
    MessagesStream,
    error_body,
    error_event,
    error_type,
    message_dict,
    to_chat,
    to_message,
)
from switchyard.errors import (
    ApiError,
    AuthenticationFailed,
    DeadlineExceeded,
    InvalidRequest,
    ModelNotFound,
    PayloadTooLarge,
    PermissionDenied,
    ProviderError,
    RateLimited,
    ServiceUnavailable,
)
from switchyard.schemas.openai import Usage
from tests.unit.sse import USAGE, call, chunk, completion, events, whole_call

pytestmark = pytest.mark.unit

EVENT = pydantic.TypeAdapter(RawMessageStreamEvent)

WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


def _request(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "claude-sonnet-5", "max_tokens": 1024, **fields}
    body.setdefault("messages", [{"role": "user", "content": "Hello"}])
    return body


def _validated(stream: bytes) -> tuple[list[dict[str, Any]], Any]:
    """Each event parsed by the SDK and folded into the Message its stream helper would build."""
    snapshot = None
    buffers: dict[int, bytes] = {}
    decoded = []
    for name, data in events(stream):
        assert name == data["type"]
        decoded.append(data)
        if name == "ping":
            continue
        snapshot = accumulate_event(
            event=EVENT.validate_python(data), current_snapshot=snapshot, json_bufs=buffers
        )
    return decoded, snapshot


# -- requests --------------------------------------------------------------------------------


def test_simple_request() -> None:
    req = to_chat(
        json.dumps(
            _request(
                system="You are terse.",
                stop_sequences=["\n\nHuman:"],
                temperature=0.3,
                top_p=0.95,
                top_k=40,
                metadata={"user_id": "user-123"},
                thinking={"type": "enabled", "budget_tokens": 2048},
                service_tier="auto",
            )
        ).encode()
    )
    assert req.stream is False
    assert req.chat == {
        "model": "claude-sonnet-5",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Hello"},
        ],
        "max_completion_tokens": 1024,
        "stop": ["\n\nHuman:"],
        "temperature": 0.3,
        "top_p": 0.95,
        "user": "user-123",
    }
    assert req.context.stop_sequences == ("\n\nHuman:",)


def test_system_blocks_and_stream() -> None:
    req = to_chat(
        _request(
            stream=True,
            system=[
                {
                    "type": "text",
                    "text": "You are Claude Code.",
                    "cache_control": {"type": "ephemeral"},
                },
                {"type": "text", "text": "Be careful."},
            ],
        )
    )
    assert req.chat["messages"][0] == {
        "role": "system",
        "content": [
            {"type": "text", "text": "You are Claude Code."},
            {"type": "text", "text": "Be careful."},
        ],
    }
    assert req.chat["stream"] is True
    assert req.chat["stream_options"] == {"include_usage": True}


def test_multi_turn_tool_conversation() -> None:
    """A coding agent's history: thinking, text and two tool uses, then their results."""
    req = to_chat(
        _request(
            tools=[WEATHER_TOOL],
            tool_choice={"type": "auto", "disable_parallel_tool_use": False},
            messages=[
                {"role": "user", "content": [{"type": "text", "text": "Paris and Oslo?"}]},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "Two cities.", "signature": "sig"},
                        {"type": "text", "text": "Checking both."},
                        {
                            "type": "tool_use",
                            "id": "toolu_01",
                            "name": "get_weather",
                            "input": {"city": "Paris"},
                        },
                        {
                            "type": "tool_use",
                            "id": "toolu_02",
                            "name": "get_weather",
                            "input": {"city": "Oslo"},
                        },
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "toolu_01", "content": "18C sunny"},
                        {
                            "type": "tool_result",
                            "tool_use_id": "toolu_02",
                            "content": [{"type": "text", "text": "4C rain"}],
                            "is_error": False,
                        },
                        {"type": "text", "text": "Which is warmer?"},
                    ],
                },
            ],
        )
    )
    assert req.chat["messages"] == [
        {"role": "user", "content": "Paris and Oslo?"},
        {
            "role": "assistant",
            "content": "Checking both.",
            "tool_calls": [
                {
                    "id": "toolu_01",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                },
                {
                    "id": "toolu_02",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_01", "content": "18C sunny"},
        {"role": "tool", "tool_call_id": "toolu_02", "content": "4C rain"},
        {"role": "user", "content": "Which is warmer?"},
    ]
    assert req.chat["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": WEATHER_TOOL["input_schema"],
                "description": "Current weather for a city",
            },
        }
    ]
    assert req.chat["tool_choice"] == "auto"
    assert req.chat["parallel_tool_calls"] is True


def test_images_documents_and_tool_result_images() -> None:
    req = to_chat(
        _request(
            messages=[
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"},
                        },
                        {
                            "type": "image",
                            "source": {"type": "url", "url": "https://example.com/a.jpg"},
                        },
                        {
                            "type": "document",
                            "title": "spec.pdf",
                            "source": {
                                "type": "base64",
                                "media_type": "application/pdf",
                                "data": "JVBERi0x",
                            },
                        },
                        {
                            "type": "document",
                            "source": {"type": "text", "media_type": "text/plain", "data": "notes"},
                        },
                    ],
                },
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "t1", "name": "shot", "input": {}}],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "t1",
                            "content": [
                                {"type": "text", "text": "captured"},
                                {
                                    "type": "image",
                                    "source": {
                                        "type": "base64",
                                        "media_type": "image/jpeg",
                                        "data": "/9j/",
                                    },
                                },
                            ],
                        }
                    ],
                },
            ]
        )
    )
    first, assistant, tool, carried = req.chat["messages"]
    assert first["content"] == [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}},
        {
            "type": "file",
            "file": {"file_data": "data:application/pdf;base64,JVBERi0x", "filename": "spec.pdf"},
        },
        {"type": "text", "text": "notes"},
    ]
    assert assistant["content"] is None
    assert assistant["tool_calls"][0]["function"]["arguments"] == "{}"
    assert tool["role"] == "tool"
    assert tool["content"][0] == {"type": "text", "text": "captured"}
    assert carried == {
        "role": "user",
        "content": [{"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/"}}],
    }


@pytest.mark.parametrize(
    ("choice", "expected", "parallel"),
    [
        ({"type": "auto"}, "auto", None),
        ({"type": "any"}, "required", None),
        ({"type": "none"}, "none", None),
        (
            {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
            {"type": "function", "function": {"name": "get_weather"}},
            False,
        ),
    ],
)
def test_tool_choice(choice: dict[str, Any], expected: Any, parallel: bool | None) -> None:
    req = to_chat(_request(tools=[WEATHER_TOOL], tool_choice=choice))
    assert req.chat["tool_choice"] == expected
    assert req.chat.get("parallel_tool_calls") == parallel


def test_tool_choice_without_tools_is_dropped() -> None:
    chat = to_chat(_request(tool_choice={"type": "any", "disable_parallel_tool_use": True})).chat
    assert "tool_choice" not in chat
    assert "parallel_tool_calls" not in chat


def test_structured_output() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    req = to_chat(_request(output_config={"format": {"type": "json_schema", "schema": schema}}))
    assert req.chat["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": schema, "strict": True},
    }


@pytest.mark.parametrize(
    ("fields", "param", "message"),
    [
        ({"max_tokens": None}, "max_tokens", "max_tokens: Field required"),
        ({"model": None}, "model", "model: Field required"),
        ({"messages": None}, "messages", "messages: Field required"),
        ({"messages": []}, "messages", None),
        (
            {"tools": [WEATHER_TOOL, {"type": "web_search_20250305", "name": "web_search"}]},
            "tools[1].type",
            None,
        ),
        ({"tools": [{"type": "bash_20250124", "name": "bash"}]}, "tools[0].type", None),
        (
            {"tools": [{"name": "x"}]},
            "tools[0].input_schema",
            "tools[0].input_schema: Field required",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "look"},
                            {"type": "image", "source": {"type": "file", "file_id": "file_1"}},
                        ],
                    }
                ]
            },
            "messages[0].content[1].source.type",
            None,
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "search_result", "source": "x", "title": "t"}],
                    }
                ]
            },
            "messages[0].content[0].type",
            None,
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "hi"},
                    {
                        "role": "assistant",
                        "content": [{"type": "server_tool_use", "id": "s", "name": "web_search"}],
                    },
                ]
            },
            "messages[1].content[0].type",
            None,
        ),
        (
            {"messages": [{"role": "tool", "content": "x"}]},
            "messages[0].role",
            "messages[0].role: must be user, assistant or system (got `tool`)",
        ),
        (
            {"messages": [{"role": "user", "content": []}]},
            "messages[0].content",
            "messages[0].content: must not be empty",
        ),
        ({"tool_choice": {"type": "sometimes"}}, "tool_choice.type", None),
        ({"max_tokens": "many"}, "max_tokens", None),
    ],
)
def test_refusals_name_the_field(fields: dict[str, Any], param: str, message: str | None) -> None:
    body = {k: v for k, v in _request(**fields).items() if v is not None}
    with pytest.raises(InvalidRequest) as caught:
        to_chat(body)
    assert caught.value.status == 400
    assert caught.value.param == param
    if message is not None:
        assert caught.value.message == message


MCP_SERVER = {"type": "url", "url": "https://mcp.example.com/sse", "name": "example"}


@pytest.mark.parametrize(
    "fields",
    [
        {"mcp_servers": [MCP_SERVER]},
        {"container": "container_011"},
        {"container": {"id": None, "skills": [{"type": "anthropic", "skill_id": "pptx"}]}},
        {"inference_geo": "us"},
    ],
)
def test_fields_only_anthropic_acts_on_are_refused_naming_them(fields: dict[str, Any]) -> None:
    """Dropped, the request would be answered without the MCP tools, the container or the
    region the client asked for: the 400 says which field needs Anthropic's own API."""
    (field,) = fields
    with pytest.raises(InvalidRequest) as caught:
        to_chat(_request(**fields))
    assert (caught.value.status, caught.value.param) == (400, field)
    assert caught.value.code == "unsupported_parameter"
    body = json.loads(error_body(caught.value))
    ErrorResponse.model_validate(body)
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["message"].startswith(f"`{field}` is not supported for this model: ")
    assert (
        "needs a deployment that speaks Anthropic's Messages API natively"
        in (body["error"]["message"])
    )


def test_empty_native_fields_and_hints_are_translated() -> None:
    """Nothing asked of Anthropic's servers (null, empty), and hints whose absence changes
    nothing the client checks, translate as a plain request does."""
    plain = to_chat(_request()).chat
    req = to_chat(
        _request(
            mcp_servers=[],
            container=None,
            inference_geo=None,
            context_management={"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
            speed="fast",
            fallbacks="default",
            diagnostics={"previous_message_id": None},
            cache_control={"type": "ephemeral"},
            output_config={"effort": "high", "task_budget": {"type": "tokens", "total": 9000}},
        )
    )
    assert req.chat == plain


def test_beta_output_format_is_structured_output() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    req = to_chat(_request(output_format={"type": "json_schema", "schema": schema}))
    assert req.chat["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": schema, "strict": True},
    }
    with pytest.raises(InvalidRequest) as caught:
        to_chat(_request(output_format={"type": "xml"}))
    assert caught.value.param == "output_format.type"


# -- whole replies ---------------------------------------------------------------------------


def test_text_reply_is_a_valid_message() -> None:
    context = to_chat(_request()).context
    message = Message.model_validate_json(
        to_message(
            completion(content="Hi! How can I help?", usage=USAGE), context, message_id="msg_1"
        )
    )
    assert message.id == "msg_1"
    assert message.type == "message"
    assert message.role == "assistant"
    assert message.model == "gpt-4o-2024-08-06"
    assert message.stop_reason == "end_turn"
    assert message.stop_sequence is None
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].text == "Hi! How can I help?"  # type: ignore[union-attr]
    assert message.usage.input_tokens == 20
    assert message.usage.cache_read_input_tokens == 100
    assert message.usage.output_tokens == 30


def test_tool_use_reply() -> None:
    context = to_chat(_request(tools=[WEATHER_TOOL])).context
    message = Message.model_validate(
        message_dict(
            completion(
                content="Let me look.",
                finish="tool_calls",
                tool_calls=[
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    },
                    {
                        "id": "call_2",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": "not json"},
                    },
                ],
            ),
            context,
        )
    )
    assert message.id.startswith("msg_")
    assert message.stop_reason == "tool_use"
    text, first, second = message.content
    assert text.type == "text"
    assert first.type == "tool_use"
    assert (first.id, first.name, first.input) == ("call_1", "get_weather", {"city": "Paris"})
    assert second.input == {"_raw_arguments": "not json"}  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("finish", "stop_reason"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("content_filter", "refusal"),
    ],
)
def test_stop_reasons(finish: str, stop_reason: str) -> None:
    context = to_chat(_request()).context
    message = Message.model_validate_json(
        to_message(completion(content="x", finish=finish), context)
    )
    assert message.stop_reason == stop_reason


def test_stop_sequence_named_by_the_upstream() -> None:
    context = to_chat(_request(stop_sequences=["END", "STOP"])).context
    message = Message.model_validate_json(
        to_message(completion(content="done", stop_reason="STOP"), context)
    )
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", "STOP")
    # A stop string the client did not ask for (or an EOS token id) is a plain end of turn.
    other = Message.model_validate_json(to_message(completion(content="x", stop_reason=2), context))
    assert (other.stop_reason, other.stop_sequence) == ("end_turn", None)


def test_refusal_reply() -> None:
    context = to_chat(_request()).context
    message = Message.model_validate_json(
        to_message(completion(content=None, refusal="I can't help with that."), context)
    )
    assert message.stop_reason == "refusal"
    assert message.content[0].text == "I can't help with that."  # type: ignore[union-attr]


def test_not_a_chat_completion() -> None:
    with pytest.raises(ProviderError):
        to_message(b"[]", to_chat(_request()).context)


# -- streams ---------------------------------------------------------------------------------


def test_streamed_text() -> None:
    context = to_chat(_request(stream=True)).context
    stream = MessagesStream(context, message_id="msg_s1")
    out = b"".join(
        [
            stream.feed(chunk(content="")),
            stream.feed(chunk(content="Hello")),
            stream.feed(chunk(content=" world")),
            stream.feed(chunk(finish="stop")),
            stream.feed(chunk(usage=USAGE)),
            stream.feed(b"[DONE]"),
            stream.finish(),
        ]
    )
    decoded, message = _validated(out)
    assert [d["type"] for d in decoded] == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert decoded[0]["message"]["id"] == "msg_s1"
    assert decoded[0]["message"]["usage"] == {"input_tokens": 0, "output_tokens": 0}
    assert [d["delta"] for d in decoded if d["type"] == "content_block_delta"] == [
        {"type": "text_delta", "text": "Hello"},
        {"type": "text_delta", "text": " world"},
    ]
    assert decoded[-2]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert message.content[0].text == "Hello world"
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens == 20
    assert message.usage.cache_read_input_tokens == 100
    assert message.usage.output_tokens == 30
    # The cached tokens travel apart, to be billed at the cache price (still in the prompt).
    assert stream.usage == Usage(
        prompt_tokens=120, completion_tokens=30, total_tokens=150, cache_read_tokens=100
    )
    assert out.startswith(b"event: message_start\ndata: {")


def test_usage_in_the_first_chunk_reaches_message_start() -> None:
    stream = MessagesStream(to_chat(_request(stream=True)).context)
    first = events(stream.feed(chunk(content="a", usage={"prompt_tokens": 9})))
    assert first[0][1]["message"]["usage"]["input_tokens"] == 9


def test_streamed_tool_calls() -> None:
    context = to_chat(_request(stream=True, tools=[WEATHER_TOOL])).context
    stream = MessagesStream(context)
    out = b"".join(
        [
            stream.feed(chunk(content="Checking.")),
            stream.feed(chunk(tool_calls=[call(0, call_id="call_p", name="get_weather")])),
            stream.feed(chunk(tool_calls=[call(0, args='{"city":')])),
            stream.feed(chunk(tool_calls=[call(0, args='"Paris"}')])),
            stream.feed(
                chunk(tool_calls=[call(1, call_id="call_o", name="get_weather", args="{")])
            ),
            stream.feed(chunk(tool_calls=[call(1, args='"city":"Oslo"}')])),
            stream.feed(chunk(finish="tool_calls")),
            stream.feed(chunk(usage=USAGE)),
            stream.finish(),
        ]
    )
    decoded, message = _validated(out)
    starts = [d for d in decoded if d["type"] == "content_block_start"]
    stops = [d["index"] for d in decoded if d["type"] == "content_block_stop"]
    assert [s["index"] for s in starts] == [0, 1, 2]
    assert stops == [0, 1, 2]
    assert starts[1]["content_block"] == {
        "type": "tool_use",
        "id": "call_p",
        "name": "get_weather",
        "input": {},
    }
    # Blocks never overlap: each stops before the next starts.
    order = [(d["type"], d.get("index")) for d in decoded if "content_block" in d["type"]]
    for i in range(2):
        assert order.index(("content_block_stop", i)) < order.index(("content_block_start", i + 1))
    assert [b.type for b in message.content] == ["text", "tool_use", "tool_use"]
    assert message.content[1].input == {"city": "Paris"}
    assert message.content[2].input == {"city": "Oslo"}
    assert message.stop_reason == "tool_use"


def test_stream_stop_sequence_and_length() -> None:
    context = to_chat(_request(stream=True, stop_sequences=["###"])).context
    stream = MessagesStream(context)
    out = stream.feed(chunk(content="a")) + stream.feed(chunk(finish="stop", stop_reason="###"))
    decoded, message = _validated(out + stream.finish())
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", "###")
    assert decoded[-2]["usage"] == {"output_tokens": 0}

    cut = MessagesStream(context)
    _, message = _validated(cut.feed(chunk(content="a", finish="length")) + cut.finish())
    assert message.stop_reason == "max_tokens"


def test_streamed_refusal() -> None:
    stream = MessagesStream(to_chat(_request(stream=True)).context)
    out = stream.feed(chunk(refusal="I can't")) + stream.feed(chunk(refusal=" help."))
    _, message = _validated(out + stream.feed(chunk(finish="stop")) + stream.finish())
    assert message.content[0].text == "I can't help."
    assert message.stop_reason == "refusal"


def test_empty_stream() -> None:
    stream = MessagesStream(to_chat(_request(stream=True)).context)
    decoded, message = _validated(stream.finish())
    assert [d["type"] for d in decoded] == [
        "message_start",
        "ping",
        "message_delta",
        "message_stop",
    ]
    assert message.content == []


def test_error_mid_stream() -> None:
    stream = MessagesStream(to_chat(_request(stream=True)).context)
    out = stream.feed(chunk(content="partial")) + stream.fail(ServiceUnavailable("queue full"))
    name, data = events(out)[-1]
    assert name == "error"
    assert data == {"type": "error", "error": {"type": "overloaded_error", "message": "queue full"}}
    ErrorResponse.model_validate(data)
    assert stream.finish() == b""
    assert stream.feed(chunk(content="late")) == b""


# -- through the official client -------------------------------------------------------------


def _fake_anthropic(script: list[bytes] | bytes | ApiError) -> anthropic.Anthropic:
    def handle(request: httpx2.Request) -> httpx2.Response:
        # Anthropic's SDK sends the key as `x-api-key` (older releases) or a Bearer token.
        key = request.headers.get("x-api-key") or request.headers["authorization"][7:]
        assert key == "sk-ant-test"
        translated = to_chat(request.content)
        if isinstance(script, ApiError):
            return httpx2.Response(script.status, content=error_body(script, request_id="req_1"))
        if not translated.stream:
            assert isinstance(script, bytes)
            return httpx2.Response(200, content=to_message(script, translated.context))
        stream = MessagesStream(translated.context)
        assert isinstance(script, list)
        body = b"".join(stream.feed(c) for c in script) + stream.finish()
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    return anthropic.Anthropic(
        api_key="sk-ant-test",
        base_url="http://switchyard.test",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(handle)),
    )


def test_sdk_create() -> None:
    client = _fake_anthropic(completion(content="Bonjour"))
    message = client.messages.create(
        model="claude-sonnet-5", max_tokens=100, messages=[{"role": "user", "content": "Hi"}]
    )
    assert message.content[0].text == "Bonjour"  # type: ignore[union-attr]
    assert message.usage.output_tokens == 7


def test_sdk_stream_helper_with_a_tool_call() -> None:
    client = _fake_anthropic(
        [
            chunk(tool_calls=[call(0, call_id="call_1", name="get_weather", args='{"ci')]),
            chunk(tool_calls=[call(0, args='ty":"Rome"}')]),
            chunk(finish="tool_calls"),
            chunk(usage=USAGE),
        ]
    )
    with client.messages.stream(
        model="claude-sonnet-5",
        max_tokens=100,
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
        messages=[{"role": "user", "content": "Weather in Rome?"}],
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert "input_json" in kinds
    assert final.stop_reason == "tool_use"
    assert final.content[0].input == {"city": "Rome"}  # type: ignore[union-attr]


def test_sdk_create_stream_true() -> None:
    client = _fake_anthropic([chunk(content="ok"), chunk(finish="stop")])
    kinds = [
        e.type
        for e in client.messages.create(
            model="claude-sonnet-5",
            max_tokens=5,
            messages=[{"role": "user", "content": "x"}],
            stream=True,
        )
    ]
    assert kinds[0] == "message_start"
    assert kinds[-1] == "message_stop"


def test_sdk_sees_errors_as_its_own_exceptions() -> None:
    client = _fake_anthropic(RateLimited("slow down", retry_after=2))
    with pytest.raises(anthropic.RateLimitError) as caught:
        client.messages.create(
            model="claude-sonnet-5", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "slow down"},
        "request_id": "req_1",
    }


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (InvalidRequest("bad", param="max_tokens"), "invalid_request_error"),
        (AuthenticationFailed("no key"), "authentication_error"),
        (PermissionDenied("not your model"), "permission_error"),
        (ModelNotFound("no such model"), "not_found_error"),
        (PayloadTooLarge("too big"), "request_too_large"),
        (RateLimited("slow down"), "rate_limit_error"),
        (ApiError("boom"), "api_error"),
        (ProviderError("upstream broke", provider="openai"), "api_error"),
        (ServiceUnavailable("queue full"), "overloaded_error"),
        (DeadlineExceeded("too slow"), "timeout_error"),
    ],
)
def test_error_types(exc: ApiError, kind: str) -> None:
    body = json.loads(error_body(exc))
    assert body["type"] == "error"
    assert body["error"]["type"] == kind
    assert error_type(exc.status) == kind
    if kind != "request_too_large":  # documented by Anthropic, absent from the SDK's union
        ErrorResponse.model_validate(body)


def test_error_message_names_the_param() -> None:
    body = json.loads(error_body(InvalidRequest("expected a string", param="system")))
    assert body["error"]["message"] == "system: expected a string"
    assert (
        json.loads(error_body(InvalidRequest("max_tokens: Field required", param="max_tokens")))[
            "error"
        ]["message"]
        == "max_tokens: Field required"
    )


def test_unlisted_statuses() -> None:
    assert error_type(422) == "invalid_request_error"
    assert error_type(502) == "api_error"
    assert error_type(529) == "overloaded_error"
    assert error_event(ApiError("x")).startswith(b"event: error\ndata: {")


# -- passthrough usage and probes ------------------------------------------------------------

NATIVE_MESSAGE = {
    "id": "msg_01",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-5-20260101",
    "content": [{"type": "text", "text": "Hi"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 12,
        "cache_creation_input_tokens": 300,
        "cache_read_input_tokens": 2000,
        "output_tokens": 40,
        "service_tier": "standard",
    },
}


def test_usage_of_a_native_message() -> None:
    assert usage.anthropic_usage(json.dumps(NATIVE_MESSAGE).encode()) == Usage(
        prompt_tokens=2312,
        completion_tokens=40,
        total_tokens=2352,
        cache_read_tokens=2000,
        cache_write_tokens=300,
    )
    assert usage.anthropic_usage(b'{"type":"message"}') is None


def test_usage_of_a_native_stream() -> None:
    start = {**NATIVE_MESSAGE, "content": [], "stop_reason": None}
    start["usage"] = {**NATIVE_MESSAGE["usage"], "output_tokens": 1}  # type: ignore[dict-item]
    native = [
        {"type": "message_start", "message": start},
        {"type": "ping"},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": 'say "message_delta"'},
        },
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 15},
        },
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 40, "input_tokens": 12},
        },
        {"type": "message_stop"},
    ]
    tracker = usage.AnthropicUsageTracker()
    assert tracker.usage is None
    for event in native:
        tracker.feed(b"data: " + json.dumps(event).encode())
    assert tracker.usage == Usage(
        prompt_tokens=2312,
        completion_tokens=40,
        total_tokens=2352,
        cache_read_tokens=2000,
        cache_write_tokens=300,
    )


def test_probe() -> None:
    probe = probes.probe_messages(json.dumps(_request(stream=True)).encode())
    assert (probe.model, probe.max_tokens, probe.stream) == ("claude-sonnet-5", 1024, True)
    with pytest.raises(InvalidRequest) as caught:
        probes.probe_messages(b'{"model":"m","messages":[{"role":"user","content":"x"}]}')
    assert caught.value.param == "max_tokens"
    assert caught.value.message == "max_tokens: Field required"
    with pytest.raises(InvalidRequest) as caught:
        probes.probe_messages(b'{"model":"m","max_tokens":5,"messages":[]}')
    assert caught.value.param == "messages"
    with pytest.raises(InvalidRequest) as caught:
        probes.probe_messages(b"[]")
    assert caught.value.message == "request body must be a JSON object"


@pytest.mark.parametrize("index", [None, 0])
def test_streamed_calls_without_an_index_of_their_own_stay_apart(index: int | None) -> None:
    """Gemini's OpenAI endpoint streams each whole call in a chunk of its own with no index
    (other servers give every call index 0), then says ``stop``: two tool_use blocks and
    ``tool_use``, not one block with both calls' arguments run together and ``end_turn``."""
    context = to_chat(_request(stream=True, tools=[WEATHER_TOOL])).context
    stream = MessagesStream(context)
    out = b"".join(
        [
            stream.feed(chunk(tool_calls=[whole_call("call_a", '{"city":"Paris"}', index)])),
            stream.feed(chunk(tool_calls=[whole_call("call_b", '{"city":"Oslo"}', index)])),
            stream.feed(chunk(finish="stop")),
            stream.finish(),
        ]
    )
    _, message = _validated(out)
    assert [(b.type, b.id, b.input) for b in message.content] == [
        ("tool_use", "call_a", {"city": "Paris"}),
        ("tool_use", "call_b", {"city": "Oslo"}),
    ]
    assert message.stop_reason == "tool_use"


def test_fragments_under_a_reused_index_follow_the_newest_call() -> None:
    context = to_chat(_request(stream=True, tools=[WEATHER_TOOL])).context
    stream = MessagesStream(context)
    out = b"".join(
        [
            stream.feed(chunk(tool_calls=[call(0, call_id="call_a", name="get_weather")])),
            stream.feed(chunk(tool_calls=[call(0, args='{"city":"Paris"}')])),
            stream.feed(chunk(tool_calls=[call(0, call_id="call_b", name="get_weather")])),
            stream.feed(chunk(tool_calls=[call(0, args='{"city":"Oslo"}')])),
            stream.feed(chunk(finish="tool_calls")),
            stream.finish(),
        ]
    )
    _, message = _validated(out)
    assert [b.input for b in message.content] == [
        {"city": "Paris"},
        {"city": "Oslo"},
    ]


def test_a_reply_that_calls_tools_but_says_stop_is_tool_use() -> None:
    context = to_chat(_request(tools=[WEATHER_TOOL])).context
    calls = [whole_call("call_a", '{"city": "Paris"}}', None)]  # a stray brace too
    message = Message.model_validate(
        message_dict(completion(finish="stop", tool_calls=calls), context)
    )
    assert message.stop_reason == "tool_use"
    # The object before the stray brace, as a streaming client's parser reads it.
    assert message.content[0].input == {"city": "Paris"}  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"tool_choice": {"type": []}}, "tool_choice.type"),
        (
            {
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": [{"type": {}}]},
                ]
            },
            "messages[1].content[0].type",
        ),
    ],
)
def test_a_value_of_the_wrong_json_type_is_a_400(fields: dict[str, Any], param: str) -> None:
    """Looked up in a table, a list or an object raised TypeError (a 500)."""
    with pytest.raises(InvalidRequest) as caught:
        to_chat(_request(**fields))
    assert caught.value.param == param


def test_cache_writes_reported_by_litellm_reach_the_message_and_the_bill() -> None:
    """litellm reports Anthropic's cache reads and writes beside the chat triple (and in
    ``prompt_tokens_details``), folded into ``prompt_tokens``: the translated message splits
    them out again, and the usage billed carries both, inside the prompt."""
    reported = {
        "prompt_tokens": 101010,
        "completion_tokens": 10,
        "total_tokens": 101020,
        "prompt_tokens_details": {"cached_tokens": 100000, "cache_creation_tokens": 1000},
        "cache_read_input_tokens": 100000,
        "cache_creation_input_tokens": 1000,
    }
    context = to_chat(_request()).context
    message = Message.model_validate_json(
        to_message(completion(content="hi", usage=reported), context)
    )
    assert message.usage.input_tokens == 10
    assert message.usage.cache_read_input_tokens == 100000
    assert message.usage.cache_creation_input_tokens == 1000
    stream = MessagesStream(context)
    stream.feed(chunk(content="hi"))
    stream.feed(chunk(usage=reported))
    stream.finish()
    assert stream.usage == Usage(
        prompt_tokens=101010,
        completion_tokens=10,
        total_tokens=101020,
        cache_read_tokens=100000,
        cache_write_tokens=1000,
    )


def test_a_failed_tool_result_says_so_in_chat() -> None:
    """Chat has no ``is_error``: a failed tool's text opens with ``Error:`` so the model does
    not read it as the tool's answer."""
    call = {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"city": "Oslo"}}
    for content, expected in (
        ("boom", "Error: boom"),
        ([{"type": "text", "text": "boom"}], "Error: boom"),
        ([], "Error:"),
        (None, "Error: "),
    ):
        result: dict[str, Any] = {"type": "tool_result", "tool_use_id": "t1", "is_error": True}
        if content is not None:
            result["content"] = content
        req = to_chat(
            _request(
                tools=[WEATHER_TOOL],
                messages=[
                    {"role": "user", "content": "Oslo?"},
                    {"role": "assistant", "content": [call]},
                    {"role": "user", "content": [result]},
                ],
            )
        )
        tool = next(m for m in req.chat["messages"] if m["role"] == "tool")
        assert tool["content"] == expected, content
