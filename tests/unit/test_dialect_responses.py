"""The Responses dialect: requests to chat, chat replies and streams back, checked by OpenAI's SDK.

Every Response object and stream event produced here is parsed with the official ``openai``
package's own types, and whole streams are run through its stream state machine (the one
``client.responses.stream()`` uses) and through a real client over a mock HTTP transport.
"""

from __future__ import annotations

import json
from typing import Any

import httpx2
import openai
import pydantic
import pytest
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import Response, ResponseStreamEvent

from switchyard.dialects import probes, usage
from switchyard.dialects.responses import ResponsesStream, response_dict, to_chat, to_response
from switchyard.errors import InvalidRequest, ProviderError, RateLimited, ServiceUnavailable
from switchyard.schemas.openai import Usage
from tests.unit.sse import USAGE, call, chunk, completion, events, whole_call

pytestmark = pytest.mark.unit

EVENT = pydantic.TypeAdapter(ResponseStreamEvent)

WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather for a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}


def _request(**fields: Any) -> bytes:
    return json.dumps({"model": "gpt-4o", **fields}).encode()


def _validated(stream: bytes) -> list[dict[str, Any]]:
    """Each event parsed by the SDK; the whole stream through its state machine."""
    state: ResponseStreamState[Any] = ResponseStreamState(
        text_format=openai.omit, input_tools=openai.omit
    )
    decoded = []
    for name, data in events(stream):
        assert name == data["type"]
        state.handle_event(EVENT.validate_python(data))
        decoded.append(data)
    assert [d["sequence_number"] for d in decoded] == list(range(len(decoded)))
    return decoded


# -- requests --------------------------------------------------------------------------------


def test_text_request_with_instructions_and_sampling() -> None:
    req = to_chat(
        _request(
            instructions="You are terse.",
            input="What is NATS?",
            max_output_tokens=200,
            temperature=0.2,
            top_p=0.9,
            user="u-1",
            metadata={"team": "search"},
            store=True,
            include=["reasoning.encrypted_content"],
            truncation="auto",
            some_future_field={"x": 1},
        )
    )
    assert req.stream is False
    assert req.chat == {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "What is NATS?"},
        ],
        "max_completion_tokens": 200,
        "temperature": 0.2,
        "top_p": 0.9,
        "user": "u-1",
    }
    assert req.context.model == "gpt-4o"
    assert req.context.echo["metadata"] == {"team": "search"}


def test_stream_asks_chat_for_usage() -> None:
    req = to_chat(_request(input="hi", stream=True))
    assert req.stream is True
    assert req.chat["stream"] is True
    assert req.chat["stream_options"] == {"include_usage": True}


def test_multi_turn_tool_conversation() -> None:
    """Agent history as the OpenAI SDK sends it back: outputs of the last turn, then results."""
    req = to_chat(
        _request(
            input=[
                {"role": "developer", "content": "Use tools when useful."},
                {"type": "message", "role": "user", "content": "Weather in Paris and Oslo?"},
                {
                    "type": "reasoning",
                    "id": "rs_1",
                    "summary": [],
                    "encrypted_content": "gAAAA...",
                },
                {
                    "type": "message",
                    "id": "msg_1",
                    "role": "assistant",
                    "status": "completed",
                    "content": [
                        {"type": "output_text", "text": "Checking both.", "annotations": []}
                    ],
                },
                {
                    "type": "function_call",
                    "id": "fc_1",
                    "call_id": "call_paris",
                    "name": "get_weather",
                    "arguments": '{"city":"Paris"}',
                    "status": "completed",
                },
                {
                    "type": "function_call",
                    "id": "fc_2",
                    "call_id": "call_oslo",
                    "name": "get_weather",
                    "arguments": '{"city":"Oslo"}',
                },
                {"type": "function_call_output", "call_id": "call_paris", "output": "18C sunny"},
                {
                    "type": "function_call_output",
                    "call_id": "call_oslo",
                    "output": [{"type": "input_text", "text": "4C rain"}],
                },
                {"role": "user", "content": [{"type": "input_text", "text": "Which is warmer?"}]},
            ],
            tools=[WEATHER_TOOL],
            tool_choice="auto",
            parallel_tool_calls=True,
        )
    )
    assert req.chat["messages"] == [
        {"role": "system", "content": "Use tools when useful."},
        {"role": "user", "content": "Weather in Paris and Oslo?"},
        {
            "role": "assistant",
            "content": "Checking both.",
            "tool_calls": [
                {
                    "id": "call_paris",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                },
                {
                    "id": "call_oslo",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_paris", "content": "18C sunny"},
        {"role": "tool", "tool_call_id": "call_oslo", "content": "4C rain"},
        {"role": "user", "content": "Which is warmer?"},
    ]
    assert req.chat["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Current weather for a city",
                "parameters": WEATHER_TOOL["parameters"],
                "strict": True,
            },
        }
    ]
    assert req.chat["tool_choice"] == "auto"
    assert req.chat["parallel_tool_calls"] is True


def test_function_call_without_preceding_text_opens_an_assistant_message() -> None:
    req = to_chat(
        _request(
            input=[
                {"role": "user", "content": "Paris?"},
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "ok"},
            ]
        )
    )
    assert req.chat["messages"][1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        ],
    }


def test_multimodal_parts() -> None:
    req = to_chat(
        _request(
            input=[
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "What is in this image and file?"},
                        {
                            "type": "input_image",
                            "image_url": "https://example.com/cat.png",
                            "detail": "high",
                        },
                        {
                            "type": "input_file",
                            "filename": "report.pdf",
                            "file_data": "data:application/pdf;base64,JVBERi0x",
                        },
                    ],
                }
            ]
        )
    )
    assert req.chat["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in this image and file?"},
                {
                    "type": "image_url",
                    "image_url": {"url": "https://example.com/cat.png", "detail": "high"},
                },
                {
                    "type": "file",
                    "file": {
                        "file_data": "data:application/pdf;base64,JVBERi0x",
                        "filename": "report.pdf",
                    },
                },
            ],
        }
    ]


def test_images_in_a_tool_output_follow_the_tool_messages() -> None:
    req = to_chat(
        _request(
            input=[
                {"role": "user", "content": "Screenshot the page"},
                {"type": "function_call", "call_id": "c1", "name": "shot", "arguments": "{}"},
                {
                    "type": "function_call_output",
                    "call_id": "c1",
                    "output": [
                        {"type": "input_text", "text": "done"},
                        {"type": "input_image", "image_url": "data:image/png;base64,iVBO"},
                    ],
                },
            ]
        )
    )
    tool, carried = req.chat["messages"][2:]
    assert tool["role"] == "tool"
    assert tool["tool_call_id"] == "c1"
    assert tool["content"][0] == {"type": "text", "text": "done"}
    assert carried == {
        "role": "user",
        "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}}],
    }


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("required", "required"),
        ("none", "none"),
        (
            {"type": "function", "name": "get_weather"},
            {"type": "function", "function": {"name": "get_weather"}},
        ),
        (
            {
                "type": "allowed_tools",
                "mode": "required",
                "tools": [{"type": "function", "name": "get_weather"}],
            },
            {
                "type": "allowed_tools",
                "allowed_tools": {
                    "mode": "required",
                    "tools": [{"type": "function", "function": {"name": "get_weather"}}],
                },
            },
        ),
    ],
)
def test_tool_choice(choice: Any, expected: Any) -> None:
    req = to_chat(_request(input="hi", tools=[WEATHER_TOOL], tool_choice=choice))
    assert req.chat["tool_choice"] == expected
    assert req.context.echo["tool_choice"] == choice


def test_text_format_and_reasoning() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    req = to_chat(
        _request(
            input="give a",
            text={
                "format": {
                    "type": "json_schema",
                    "name": "thing",
                    "schema": schema,
                    "strict": True,
                },
                "verbosity": "low",
            },
            reasoning={"effort": "high", "summary": "auto"},
        )
    )
    assert req.chat["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "thing", "schema": schema, "strict": True},
    }
    assert req.chat["verbosity"] == "low"
    assert req.chat["reasoning_effort"] == "high"
    json_mode = to_chat(_request(input="json", text={"format": {"type": "json_object"}}))
    assert json_mode.chat["response_format"] == {"type": "json_object"}


def test_tool_settings_only_with_tools() -> None:
    """OpenAI's chat refuses tool_choice and parallel_tool_calls on a request without tools."""
    chat = to_chat(_request(input="x", parallel_tool_calls=False, tool_choice="none")).chat
    assert "parallel_tool_calls" not in chat
    assert "tool_choice" not in chat


@pytest.mark.parametrize(
    ("fields", "param", "code"),
    [
        ({"previous_response_id": "resp_1"}, "previous_response_id", "unsupported_parameter"),
        ({"conversation": "conv_1"}, "conversation", "unsupported_parameter"),
        ({"prompt": {"id": "pmpt_1"}}, "prompt", "unsupported_parameter"),
        ({"background": True}, "background", "unsupported_parameter"),
        (
            {"tools": [WEATHER_TOOL, {"type": "web_search"}]},
            "tools[1].type",
            "unsupported_value",
        ),
        ({"tools": [{"type": "file_search"}]}, "tools[0].type", "unsupported_value"),
        ({"tool_choice": {"type": "web_search_preview"}}, "tool_choice.type", "unsupported_value"),
        (
            {
                "input": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "input_text", "text": "what is this"},
                            {"type": "input_image", "file_id": "file-abc", "detail": "auto"},
                        ],
                    }
                ]
            },
            "input[0].content[1].file_id",
            "unsupported_value",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
            "input[0].content[0].file_id",
            "unsupported_value",
        ),
        (
            {"input": [{"type": "item_reference", "id": "msg_1"}]},
            "input[0].type",
            "unsupported_value",
        ),
        (
            {"input": [{"type": "computer_call_output", "call_id": "c", "output": {}}]},
            "input[0].type",
            "unsupported_value",
        ),
        (
            {"input": [{"type": "function_call_output", "output": "x"}]},
            "input[0].call_id",
            "missing_required_parameter",
        ),
        ({"input": [{"role": "tool", "content": "x"}]}, "input[0].role", "invalid_request"),
        ({"model": None}, "model", "missing_required_parameter"),
        ({"input": None}, "input", "missing_required_parameter"),
        ({"input": []}, "input", "invalid_request"),
        ({"temperature": "hot"}, "temperature", "invalid_request"),
    ],
)
def test_refusals_name_the_field(fields: dict[str, Any], param: str, code: str) -> None:
    body = {"model": "gpt-4o", "input": "hi", **fields}
    with pytest.raises(InvalidRequest) as caught:
        to_chat({k: v for k, v in body.items() if v is not None})
    assert caught.value.status == 400
    assert caught.value.param == param
    assert caught.value.code == code


def test_an_item_reference_left_unresolved_is_refused_naming_no_option() -> None:
    """The model-proxy fills references in before translating (tests/test_item_references.py):
    one reaching the translation was not, and no client option would change that."""
    body = {"model": "m", "input": [{"type": "item_reference", "id": "msg_1"}]}
    with pytest.raises(InvalidRequest) as caught:
        to_chat(body)
    assert "send the item itself" in caught.value.message
    assert "store: false" not in caught.value.message


def test_background_false_and_store_are_accepted() -> None:
    req = to_chat(_request(input="hi", background=False, store=False, previous_response_id=None))
    assert req.chat["messages"] == [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"moderation": {"model": "omni-moderation-latest"}}, "`moderation`"),
        (
            {"include": ["reasoning.encrypted_content", "message.output_text.logprobs"]},
            "`include` `message.output_text.logprobs`",
        ),
    ],
)
def test_what_only_openai_serves_is_refused_naming_it(fields: dict[str, Any], named: str) -> None:
    """Dropped, the answer would skip the moderation asked for, or come without the log
    probabilities the client reads: the 400 names the field and what can serve it."""
    with pytest.raises(InvalidRequest) as caught:
        to_chat(_request(input="hi", **fields))
    assert (caught.value.status, caught.value.param) == (400, next(iter(fields)))
    assert caught.value.message.startswith(named)
    assert "needs a deployment that speaks the OpenAI Responses API natively" in (
        caught.value.message
    )


def test_hints_a_translated_answer_can_do_without_are_dropped() -> None:
    plain = to_chat(_request(input="hi")).chat
    req = to_chat(
        _request(
            input="hi",
            moderation=None,
            include=["reasoning.encrypted_content", "message.input_image.image_url"],
            top_logprobs=3,  # OpenAI too returns no log probabilities without the include
            max_tool_calls=2,
            truncation="auto",
            context_management=[{"type": "compaction", "compact_threshold": 100000}],
            prompt_cache_options={"mode": "implicit"},
            prompt_cache_retention="24h",
            stream_options={"include_obfuscation": False},
        )
    )
    assert req.chat == plain


def test_malformed_body() -> None:
    with pytest.raises(InvalidRequest) as caught:
        to_chat(b"{not json")
    assert caught.value.code == "invalid_json"
    with pytest.raises(InvalidRequest):
        to_chat(b"[1, 2]")


# -- whole replies ---------------------------------------------------------------------------


def test_text_reply_is_a_valid_response() -> None:
    context = to_chat(_request(input="hi", instructions="be nice", temperature=0.5)).context
    body = to_response(
        completion(content="Hello there!", usage=USAGE),
        context,
        response_id="resp_42",
        created_at=1700000001,
    )
    response = Response.model_validate_json(body)
    assert response.id == "resp_42"
    assert response.object == "response"
    assert response.status == "completed"
    assert response.created_at == 1700000001
    assert response.model == "gpt-4o-2024-08-06"
    assert response.output_text == "Hello there!"
    assert response.instructions == "be nice"
    assert response.temperature == 0.5
    assert response.output[0].type == "message"
    assert response.output[0].content[0].annotations == []  # type: ignore[union-attr]
    assert response.usage is not None
    assert response.usage.input_tokens == 120
    assert response.usage.output_tokens == 30
    assert response.usage.total_tokens == 150
    assert response.usage.input_tokens_details.cached_tokens == 100
    assert response.usage.output_tokens_details.reasoning_tokens == 8


def test_tool_call_reply() -> None:
    context = to_chat(_request(input="weather?", tools=[WEATHER_TOOL])).context
    data = response_dict(
        completion(
            content=None,
            finish="tool_calls",
            tool_calls=[
                {
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                },
                {
                    "id": "call_b",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                },
            ],
        ),
        context,
        response_id="resp_7",
    )
    response = Response.model_validate(data)
    assert response.status == "completed"
    assert [item.type for item in response.output] == ["function_call", "function_call"]
    first = response.output[0]
    assert first.type == "function_call"
    assert first.call_id == "call_a"
    assert first.name == "get_weather"
    assert first.arguments == '{"city":"Paris"}'
    assert first.id == "fc_7_0"
    assert response.tools[0].name == "get_weather"  # type: ignore[union-attr]


def test_length_makes_the_response_incomplete() -> None:
    context = to_chat(_request(input="write an essay", max_output_tokens=5)).context
    response = Response.model_validate_json(
        to_response(completion(content="Once upon a", finish="length"), context)
    )
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output[0].status == "incomplete"  # type: ignore[union-attr]
    assert response.max_output_tokens == 5


def test_refusal_reply() -> None:
    context = to_chat(_request(input="something bad")).context
    response = Response.model_validate_json(
        to_response(completion(content=None, refusal="I can't help with that."), context)
    )
    part = response.output[0].content[0]  # type: ignore[union-attr,index]
    assert part.type == "refusal"
    assert part.refusal == "I can't help with that."  # type: ignore[union-attr]


def test_not_a_chat_completion() -> None:
    context = to_chat(_request(input="x")).context
    with pytest.raises(ProviderError) as caught:
        to_response(b'{"choices": "nope"}', context)
    assert caught.value.code == "invalid_upstream_reply"


# -- streams ---------------------------------------------------------------------------------


def test_streamed_text() -> None:
    context = to_chat(_request(input="hi", stream=True)).context
    stream = ResponsesStream(context, response_id="resp_s1", created_at=1700000002)
    out = b"".join(
        [
            stream.feed(chunk(content="")),
            stream.feed(chunk(content="Hel")),
            stream.feed(chunk(content="lo")),
            stream.feed(chunk(finish="stop")),
            stream.feed(chunk(usage=USAGE)),
            stream.feed(b"[DONE]"),
            stream.finish(),
        ]
    )
    decoded = _validated(out)
    assert [d["type"] for d in decoded] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [d["delta"] for d in decoded if d["type"] == "response.output_text.delta"] == [
        "Hel",
        "lo",
    ]
    assert decoded[6]["text"] == "Hello"
    final = Response.model_validate(decoded[-1]["response"])
    assert final.id == "resp_s1"
    assert final.status == "completed"
    assert final.output_text == "Hello"
    assert final.usage is not None
    assert final.usage.total_tokens == 150
    assert stream.usage is not None
    assert stream.usage.prompt_tokens == 120
    assert stream.finish() == b""


def test_streamed_tool_calls_after_text() -> None:
    context = to_chat(_request(input="weather?", stream=True, tools=[WEATHER_TOOL])).context
    stream = ResponsesStream(context, response_id="resp_s2")
    out = b"".join(
        [
            stream.feed(chunk(content="Let me check.")),
            stream.feed(chunk(tool_calls=[call(0, call_id="call_p", name="get_weather")])),
            stream.feed(chunk(tool_calls=[call(0, args='{"city":')])),
            stream.feed(chunk(tool_calls=[call(0, args='"Paris"}')])),
            stream.feed(chunk(tool_calls=[call(1, call_id="call_o", name="get_weather")])),
            stream.feed(chunk(tool_calls=[call(1, args='{"city":"Oslo"}')])),
            stream.feed(chunk(finish="tool_calls")),
            stream.feed(chunk(usage=USAGE)),
            stream.finish(),
        ]
    )
    decoded = _validated(out)
    types = [d["type"] for d in decoded]
    assert types.count("response.function_call_arguments.delta") == 3
    assert types.count("response.output_item.done") == 3
    done = [d for d in decoded if d["type"] == "response.function_call_arguments.done"]
    assert [(d["name"], d["arguments"], d["output_index"]) for d in done] == [
        ("get_weather", '{"city":"Paris"}', 1),
        ("get_weather", '{"city":"Oslo"}', 2),
    ]
    # The message closes before the first call opens.
    assert types.index("response.output_item.done") < types.index(
        "response.function_call_arguments.delta"
    )
    final = Response.model_validate(decoded[-1]["response"])
    assert [item.type for item in final.output] == ["message", "function_call", "function_call"]
    assert final.output[1].call_id == "call_p"  # type: ignore[union-attr]


def test_interleaved_parallel_tool_calls() -> None:
    """A provider that alternates between two calls' arguments still yields exact items."""
    context = to_chat(_request(input="x", stream=True, tools=[WEATHER_TOOL])).context
    stream = ResponsesStream(context)
    out = b"".join(
        [
            stream.feed(
                chunk(
                    tool_calls=[
                        call(0, call_id="a", name="get_weather", args='{"city":'),
                        call(1, call_id="b", name="get_weather", args='{"city":'),
                    ]
                )
            ),
            stream.feed(chunk(tool_calls=[call(0, args='"A"}'), call(1, args='"B"}')])),
            stream.feed(chunk(finish="tool_calls")),
            stream.finish(),
        ]
    )
    final = Response.model_validate(_validated(out)[-1]["response"])
    assert [(i.call_id, i.arguments) for i in final.output] == [  # type: ignore[union-attr]
        ("a", '{"city":"A"}'),
        ("b", '{"city":"B"}'),
    ]
    assert final.usage is None


def test_stream_cut_by_length_is_incomplete() -> None:
    context = to_chat(_request(input="x", stream=True, max_output_tokens=2)).context
    stream = ResponsesStream(context)
    out = stream.feed(chunk(content="Once")) + stream.feed(chunk(finish="length")) + stream.finish()
    last = _validated(out)[-1]
    assert last["type"] == "response.incomplete"
    assert last["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert last["response"]["output"][0]["status"] == "incomplete"


def test_empty_stream_still_has_a_message() -> None:
    context = to_chat(_request(input="x", stream=True)).context
    stream = ResponsesStream(context)
    decoded = _validated(stream.feed(chunk(finish="stop")) + stream.finish())
    assert Response.model_validate(decoded[-1]["response"]).output_text == ""


def test_error_mid_stream() -> None:
    context = to_chat(_request(input="x", stream=True)).context
    stream = ResponsesStream(context)
    out = stream.feed(chunk(content="partial")) + stream.fail(
        RateLimited("upstream rate limited", retry_after=3)
    )
    decoded = _validated(out)
    error, failed = decoded[-2:]
    assert error["type"] == "error"
    assert error["code"] == "rate_limit_exceeded"
    assert error["message"] == "upstream rate limited"
    assert failed["type"] == "response.failed"
    response = Response.model_validate(failed["response"])
    assert response.status == "failed"
    assert response.error is not None
    assert response.error.code == "rate_limit_exceeded"
    assert response.output_text == "partial"
    assert stream.feed(chunk(content="late")) == b""
    assert stream.finish() == b""


def test_error_before_any_chunk_opens_the_stream_first() -> None:
    stream = ResponsesStream(to_chat(_request(input="x", stream=True)).context)
    decoded = _validated(stream.fail(ServiceUnavailable("no workers")))
    assert [d["type"] for d in decoded] == [
        "response.created",
        "response.in_progress",
        "error",
        "response.failed",
    ]
    assert decoded[-1]["response"]["error"]["code"] == "server_error"


def test_streamed_refusal() -> None:
    stream = ResponsesStream(to_chat(_request(input="x", stream=True)).context)
    out = stream.feed(chunk(refusal="I can't")) + stream.feed(chunk(refusal=" do that."))
    decoded = _validated(out + stream.feed(chunk(finish="stop")) + stream.finish())
    assert [d["delta"] for d in decoded if d["type"] == "response.refusal.delta"] == [
        "I can't",
        " do that.",
    ]
    done = next(d for d in decoded if d["type"] == "response.refusal.done")
    assert done["refusal"] == "I can't do that."


# -- through the official client -------------------------------------------------------------


def _fake_openai(script: list[bytes] | bytes) -> openai.OpenAI:
    """An OpenAI client whose HTTP calls are translated to chat and answered from a script."""

    def handle(request: httpx2.Request) -> httpx2.Response:
        translated = to_chat(request.content)
        assert translated.chat["messages"][-1]["role"] in ("user", "tool")
        if not translated.stream:
            assert isinstance(script, bytes)
            return httpx2.Response(200, content=to_response(script, translated.context))
        stream = ResponsesStream(translated.context)
        assert isinstance(script, list)
        body = b"".join(stream.feed(c) for c in script) + stream.finish()
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    return openai.OpenAI(
        api_key="sk-test",
        base_url="http://switchyard.test/v1",
        http_client=httpx2.Client(transport=httpx2.MockTransport(handle)),
    )


def test_sdk_create_with_a_tool_call() -> None:
    client = _fake_openai(
        completion(
            content=None,
            finish="tool_calls",
            tool_calls=[
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        )
    )
    response = client.responses.create(
        model="gpt-4o",
        input="Weather in Paris?",
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
    )
    item = response.output[0]
    assert item.type == "function_call"
    assert json.loads(item.arguments) == {"city": "Paris"}


def test_sdk_stream_helper_final_response() -> None:
    client = _fake_openai(
        [chunk(content="Hi"), chunk(content=" there"), chunk(finish="stop"), chunk(usage=USAGE)]
    )
    with client.responses.stream(model="gpt-4o", input="hello") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert deltas == ["Hi", " there"]
    assert final.output_text == "Hi there"
    assert final.usage is not None
    assert final.usage.output_tokens == 30


def test_sdk_create_stream_true() -> None:
    client = _fake_openai([chunk(content="ok"), chunk(finish="stop")])
    kinds = [e.type for e in client.responses.create(model="gpt-4o", input="x", stream=True)]
    assert kinds[0] == "response.created"
    assert kinds[-1] == "response.completed"


# -- passthrough usage and probes ------------------------------------------------------------


def test_usage_of_a_native_response_body() -> None:
    context = to_chat(_request(input="x")).context
    body = to_response(completion(content="hi", usage=USAGE), context)
    # input_tokens_details.cached_tokens: in the prompt, and apart (billed at the cache price).
    assert usage.responses_usage(body) == Usage(
        prompt_tokens=120, completion_tokens=30, total_tokens=150, cache_read_tokens=100
    )
    assert usage.responses_usage(b'{"id":"resp_1","usage":null}') is None
    assert usage.responses_usage(b'garbage with "usage"') is None


def test_usage_of_a_native_event_stream() -> None:
    context = to_chat(_request(input="x", stream=True)).context
    stream = ResponsesStream(context)
    native = stream.feed(chunk(content="hi")) + stream.feed(chunk(usage=USAGE)) + stream.finish()
    tracker = usage.ResponsesUsageTracker()
    for line in native.split(b"\n"):
        if line.startswith(b"data: "):
            tracker.feed(line)
    assert tracker.usage == Usage(
        prompt_tokens=120, completion_tokens=30, total_tokens=150, cache_read_tokens=100
    )
    assert stream.usage == tracker.usage  # the translated stream's own count, the same


def test_probe() -> None:
    probe = probes.probe_responses(_request(input="x", stream=True, max_output_tokens=9))
    assert (probe.model, probe.stream, probe.max_output_tokens) == ("gpt-4o", True, 9)
    stateful = probes.probe_responses(b'{"model":"gpt-4o","previous_response_id":"resp_1"}')
    assert stateful.stream is False
    with pytest.raises(InvalidRequest) as caught:
        probes.probe_responses(b'{"input":"x"}')
    assert caught.value.param == "model"
    with pytest.raises(InvalidRequest) as caught:
        probes.probe_responses(b'{"model":"m","stream":"yes"}')
    assert caught.value.param == "stream"
    # An OpenAI deployment would take it and answer with an id nobody could poll through
    # Switchyard: refused at the edge, whatever the deployment.
    with pytest.raises(InvalidRequest) as caught:
        probes.probe_responses(b'{"model":"gpt-4o","input":"x","background":true}')
    assert (caught.value.param, caught.value.code) == ("background", "unsupported_parameter")
    assert probes.probe_responses(b'{"model":"gpt-4o","input":"x","background":false}')


@pytest.mark.parametrize("index", [None, 0])
def test_streamed_calls_without_an_index_of_their_own_stay_apart(index: int | None) -> None:
    """Each whole call in a chunk of its own with no index (Gemini's OpenAI endpoint) or
    all at index 0: two function_call items, not one with both arguments run together."""
    context = to_chat(_request(input="weather?", stream=True, tools=[WEATHER_TOOL])).context
    stream = ResponsesStream(context, response_id="resp_n")
    fragments = [
        whole_call("call_a", '{"city":"Paris"}', index),
        whole_call("call_b", '{"city":"Oslo"}', index),
    ]
    out = b"".join(
        [
            stream.feed(chunk(tool_calls=[fragments[0]])),
            stream.feed(chunk(tool_calls=[fragments[1]])),
            stream.feed(chunk(finish="stop")),
            stream.finish(),
        ]
    )
    final = Response.model_validate(_validated(out)[-1]["response"])
    assert [(i.type, i.call_id, i.arguments) for i in final.output] == [  # type: ignore[union-attr]
        ("function_call", "call_a", '{"city":"Paris"}'),
        ("function_call", "call_b", '{"city":"Oslo"}'),
    ]


def test_an_image_detail_of_the_wrong_json_type_is_ignored_not_a_500() -> None:
    image = {"type": "input_image", "image_url": "https://x/y.png", "detail": ["high"]}
    chat = to_chat(_request(input=[{"role": "user", "content": [image]}])).chat
    assert chat["messages"][0]["content"][0]["image_url"] == {"url": "https://x/y.png"}
