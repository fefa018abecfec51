"""Agent-dialect translation defects found in session 10: what a translated Messages stream
says of its prompt before the answer, system turns inside a tool run, tool calls named late,
reasoning between a tool call's argument fragments."""

from __future__ import annotations

import json
from typing import Any

import pydantic
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import RawMessageStreamEvent

from switchyard.dialects import anthropic, responses
from tests.unit.sse import call, chunk, events
from tests.unit.test_dialect_responses import _validated as _validated_responses

pytestmark = pytest.mark.unit

EVENT = pydantic.TypeAdapter(RawMessageStreamEvent)


def _messages_context(**fields: Any) -> anthropic.MessagesContext:
    body: dict[str, Any] = {"model": "claude-x", "max_tokens": 64, "stream": True, **fields}
    body.setdefault("messages", [{"role": "user", "content": "hi"}])
    return anthropic.to_chat(body).context


def _folded(stream: bytes) -> tuple[list[dict[str, Any]], Any]:
    """The events, and the Message the SDK's stream helper folds them into."""
    snapshot = None
    buffers: dict[int, bytes] = {}
    decoded = []
    for name, data in events(stream):
        decoded.append(data)
        if name != "ping":
            snapshot = accumulate_event(
                event=EVENT.validate_python(data), current_snapshot=snapshot, json_bufs=buffers
            )
    return decoded, snapshot


# -- 1. message_start shows the prompt's estimate, message_delta the provider's count ---------


def test_message_start_shows_the_prompt_estimate_and_message_delta_the_real_count() -> None:
    """``message_start`` said 0 input tokens whenever the usage came at the end (as every chat
    server sends it): Claude Code reads it to track its context."""
    stream = anthropic.MessagesStream(_messages_context(), input_tokens=41)
    out = b"".join(
        [
            stream.feed(chunk(content="Hello")),
            stream.feed(chunk(finish="stop")),
            stream.feed(chunk(usage={"prompt_tokens": 37, "completion_tokens": 2})),
            stream.finish(),
        ]
    )
    decoded, message = _folded(out)
    assert decoded[0]["message"]["usage"] == {"input_tokens": 41, "output_tokens": 0}
    delta = next(d for d in decoded if d["type"] == "message_delta")
    assert delta["usage"]["input_tokens"] == 37  # the provider's, which replaces the estimate
    assert (message.usage.input_tokens, message.usage.output_tokens) == (37, 2)


def test_usage_in_the_first_chunk_still_wins_over_the_estimate() -> None:
    stream = anthropic.MessagesStream(_messages_context(), input_tokens=41)
    first = events(stream.feed(chunk(content="a", usage={"prompt_tokens": 9})))
    assert first[0][1]["message"]["usage"]["input_tokens"] == 9


# -- 2. a system turn inside a tool run follows the run -------------------------------------

_CALLED = {
    "role": "assistant",
    "content": None,
    "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
        {"id": "c2", "type": "function", "function": {"name": "f", "arguments": "{}"}},
    ],
}


def test_a_developer_message_between_calls_and_outputs_follows_the_outputs() -> None:
    """A developer (or system) item between function calls and their outputs was translated
    between the assistant's tool_calls and its tool messages, which OpenAI refuses."""
    chat = responses.to_chat(
        {
            "model": "m",
            "input": [
                {"role": "user", "content": "hi"},
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                {"type": "function_call", "call_id": "c2", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "one"},
                {"role": "developer", "content": "be terse"},
                {"type": "function_call_output", "call_id": "c2", "output": "two"},
                {"role": "user", "content": "go on"},
            ],
        }
    ).chat
    assert chat["messages"] == [
        {"role": "user", "content": "hi"},
        _CALLED,
        {"role": "tool", "tool_call_id": "c1", "content": "one"},
        {"role": "tool", "tool_call_id": "c2", "content": "two"},
        {"role": "system", "content": "be terse"},
        {"role": "user", "content": "go on"},
    ]


def test_a_tool_output_image_inside_the_run_follows_it_too() -> None:
    """The user message carrying a tool output's image was sent when the next non-output item
    came: a developer message inside the run put it there too."""
    image = {"type": "input_image", "image_url": "data:image/png;base64,AAAA"}
    chat = responses.to_chat(
        {
            "model": "m",
            "input": [
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                {"type": "function_call", "call_id": "c2", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": [image]},
                {"role": "system", "content": "note"},
                {"type": "function_call_output", "call_id": "c2", "output": "two"},
            ],
        }
    ).chat
    assert [m["role"] for m in chat["messages"]] == ["assistant", "tool", "tool", "user", "system"]


def test_a_system_turn_between_tool_use_and_tool_result_follows_the_results() -> None:
    chat = anthropic.to_chat(
        {
            "model": "claude-x",
            "max_tokens": 64,
            "system": "top",
            "messages": [
                {"role": "user", "content": "hi"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "tool_use", "id": "c1", "name": "f", "input": {}},
                        {"type": "tool_use", "id": "c2", "name": "f", "input": {}},
                    ],
                },
                {"role": "system", "content": "be terse"},
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "c1", "content": "one"},
                        {"type": "tool_result", "tool_use_id": "c2", "content": "two"},
                        {"type": "text", "text": "go on"},
                    ],
                },
            ],
        }
    ).chat
    assert chat["messages"] == [
        {"role": "system", "content": "top"},
        {"role": "user", "content": "hi"},
        _CALLED,
        {"role": "tool", "tool_call_id": "c1", "content": "one"},
        {"role": "tool", "tool_call_id": "c2", "content": "two"},
        {"role": "system", "content": "be terse"},
        {"role": "user", "content": "go on"},
    ]


def test_a_run_never_answered_keeps_its_turns_in_order() -> None:
    """Calls without results (a client that dropped them): the turns inside are not lost and
    go before the next assistant turn."""
    chat = responses.to_chat(
        {
            "model": "m",
            "input": [
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                {"role": "developer", "content": "note"},
                {"role": "assistant", "content": "done"},
                {"role": "user", "content": "next"},
            ],
        }
    ).chat
    roles = [m["role"] for m in chat["messages"]]
    assert roles == ["assistant", "system", "assistant", "user"]


# -- 3. a tool call named after its first fragment; reasoning inside a call's arguments -----

PATCH_TOOL = {"type": "custom", "name": "apply_patch", "description": "Edit files."}
FUNCTION_TOOL = {"type": "function", "name": "get_weather", "parameters": {"type": "object"}}


def _responses_out(fragments: list[bytes]) -> list[dict[str, Any]]:
    context = responses.to_chat(
        {"model": "m", "input": "go", "stream": True, "tools": [PATCH_TOOL, FUNCTION_TOOL]}
    ).context
    stream = responses.ResponsesStream(context, response_id="resp_s")
    out = b"".join([*(stream.feed(f) for f in fragments), stream.finish()])
    return _validated_responses(out)


def test_a_custom_tool_call_named_late_is_a_custom_tool_call() -> None:
    """litellm's Gemini stream: the id and the first arguments, the name in a later fragment.
    The item was announced as a nameless function_call and stayed one, so Codex got its patch
    as a function call of an unknown tool."""
    arguments = json.dumps({"input": "*** Begin Patch\n*** End Patch"})
    decoded = _responses_out(
        [
            chunk(tool_calls=[call(0, call_id="call_p", args=arguments[:12])]),
            chunk(tool_calls=[call(0, name="apply_patch", args=arguments[12:20])]),
            chunk(tool_calls=[call(0, args=arguments[20:])]),
            chunk(finish="tool_calls"),
        ]
    )
    [added] = [d for d in decoded if d["type"] == "response.output_item.added"]
    assert added["item"]["type"] == "custom_tool_call"
    assert added["item"]["name"] == "apply_patch"
    assert "response.function_call_arguments.delta" not in [d["type"] for d in decoded]
    [item] = decoded[-1]["response"]["output"]
    assert item["type"] == "custom_tool_call"
    assert (item["call_id"], item["input"]) == ("call_p", "*** Begin Patch\n*** End Patch")


def test_a_function_call_named_late_is_announced_with_its_name() -> None:
    decoded = _responses_out(
        [
            chunk(content="Checking."),
            chunk(tool_calls=[call(0, call_id="call_w", args='{"ci')]),
            chunk(tool_calls=[call(0, name="get_weather", args='ty":"Paris"}')]),
            chunk(finish="tool_calls"),
        ]
    )
    added = [d["item"] for d in decoded if d["type"] == "response.output_item.added"]
    assert [(i["type"], i.get("name")) for i in added] == [
        ("message", None),
        ("function_call", "get_weather"),
    ]
    deltas = [d["delta"] for d in decoded if d["type"] == "response.function_call_arguments.delta"]
    assert "".join(deltas) == '{"city":"Paris"}'
    final = decoded[-1]["response"]["output"]
    assert final[1]["arguments"] == '{"city":"Paris"}'
    assert final[1]["call_id"] == "call_w"


def test_a_call_never_named_is_still_answered() -> None:
    decoded = _responses_out(
        [chunk(tool_calls=[call(0, call_id="call_x", args="{}")]), chunk(finish="tool_calls")]
    )
    [item] = decoded[-1]["response"]["output"]
    assert (item["type"], item["name"], item["arguments"]) == ("function_call", "", "{}")


def _reasoning(text: str) -> bytes:
    """A chunk of reasoning only, as vLLM's reasoning parsers send it."""
    body = json.loads(chunk(content=""))
    body["choices"][0]["delta"] = {"reasoning_content": text}
    return json.dumps(body).encode()


def test_reasoning_between_argument_fragments_leaves_a_responses_call_whole() -> None:
    """A translated Response carries no reasoning items: reasoning between a call's argument
    fragments is dropped and the call stays whole (already so before this session)."""
    decoded = _responses_out(
        [
            chunk(tool_calls=[call(0, call_id="call_w", name="get_weather", args='{"ci')]),
            _reasoning("hmm, Paris"),
            chunk(tool_calls=[call(0, args='ty":"Paris"}')]),
            chunk(finish="tool_calls"),
        ]
    )
    [item] = decoded[-1]["response"]["output"]
    assert item["arguments"] == '{"city":"Paris"}'


def _messages_out(fragments: list[bytes], **fields: Any) -> tuple[list[dict[str, Any]], Any]:
    weather = {"name": "get_weather", "input_schema": {"type": "object"}}
    stream = anthropic.MessagesStream(_messages_context(tools=[weather], **fields))
    return _folded(b"".join([*(stream.feed(f) for f in fragments), stream.finish()]))


def test_a_messages_tool_call_named_late_opens_its_block_with_the_name() -> None:
    """The block opened with ``"name": ""`` and the name that came later was dropped: Claude
    Code could run no tool."""
    decoded, message = _messages_out(
        [
            chunk(tool_calls=[call(0, call_id="call_w", args='{"ci')]),
            chunk(tool_calls=[call(0, name="get_weather", args='ty":')]),
            chunk(tool_calls=[call(0, args='"Paris"}')]),
            chunk(finish="tool_calls"),
        ]
    )
    [start] = [d for d in decoded if d["type"] == "content_block_start"]
    assert start["content_block"]["name"] == "get_weather"
    [use] = message.content
    assert (use.id, use.name, use.input) == ("call_w", "get_weather", {"city": "Paris"})
    assert message.stop_reason == "tool_use"


def test_a_second_call_named_late_behind_an_open_one_keeps_its_name_and_arguments() -> None:
    _, message = _messages_out(
        [
            chunk(tool_calls=[call(0, call_id="call_a", name="get_weather", args='{"city":')]),
            chunk(tool_calls=[call(1, call_id="call_b", args='{"city":')]),
            chunk(tool_calls=[call(0, args='"Paris"}')]),
            chunk(tool_calls=[call(1, name="get_weather", args='"Oslo"}')]),
            chunk(finish="tool_calls"),
        ]
    )
    assert [(b.id, b.name, b.input) for b in message.content] == [
        ("call_a", "get_weather", {"city": "Paris"}),
        ("call_b", "get_weather", {"city": "Oslo"}),
    ]


def test_a_messages_call_never_named_still_ends_the_message() -> None:
    decoded, message = _messages_out(
        [chunk(tool_calls=[call(0, call_id="call_x", args="{}")]), chunk(finish="tool_calls")]
    )
    assert [(b.type, b.name) for b in message.content] == [("tool_use", "")]
    assert decoded[-1]["type"] == "message_stop"


THINKING = {"type": "enabled", "budget_tokens": 1024}


def test_reasoning_between_argument_fragments_leaves_a_messages_call_whole() -> None:
    """Reasoning between a tool call's argument fragments opened a thinking block, which
    closed the call's: its later fragments were dropped, and Claude Code got ``{"city":``
    cut short as ``_raw_arguments``. The call stays whole and the reasoning follows it."""
    decoded, message = _messages_out(
        [
            _reasoning("Which city? "),
            chunk(tool_calls=[call(0, call_id="call_w", name="get_weather", args='{"ci')]),
            _reasoning("Paris, "),
            chunk(tool_calls=[call(0, args='ty":"Par')]),
            _reasoning("surely."),
            chunk(tool_calls=[call(0, args='is"}')]),
            chunk(content="Checking."),
            chunk(finish="tool_calls"),
        ],
        thinking=THINKING,
    )
    assert [b.type for b in message.content] == ["thinking", "tool_use", "thinking", "text"]
    assert message.content[0].thinking == "Which city? "
    assert message.content[1].input == {"city": "Paris"}
    assert message.content[2].thinking == "Paris, surely."
    assert message.content[3].text == "Checking."
    # Blocks never overlap: each stops before the next starts.
    order = [(d["type"], d.get("index")) for d in decoded if "content_block" in d["type"]]
    assert [kind for kind, _ in order if kind != "content_block_delta"] == [
        "content_block_start",
        "content_block_stop",
    ] * 4


def test_reasoning_inside_parallel_calls_follows_all_of_them() -> None:
    _, message = _messages_out(
        [
            chunk(tool_calls=[call(0, call_id="call_a", name="get_weather", args='{"city":')]),
            chunk(tool_calls=[call(1, call_id="call_b", name="get_weather", args='{"city":')]),
            _reasoning("two cities"),
            chunk(tool_calls=[call(0, args='"Paris"}')]),
            chunk(tool_calls=[call(1, args='"Oslo"}')]),
            chunk(finish="tool_calls"),
        ],
        thinking=THINKING,
    )
    assert [b.type for b in message.content] == ["tool_use", "tool_use", "thinking"]
    assert [b.input for b in message.content[:2]] == [{"city": "Paris"}, {"city": "Oslo"}]
    assert message.stop_reason == "tool_use"
