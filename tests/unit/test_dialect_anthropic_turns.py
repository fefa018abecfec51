"""The Messages translation's fidelity: turn merging, malformed tool arguments, small details.

Chat templates that require alternating roles (Mistral's, Gemma's on vLLM) refuse two user
messages in a row; Anthropic merges consecutive turns of one role, so the translation does too.
"""

from __future__ import annotations

import json
from typing import Any

import pydantic
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message, RawMessageStreamEvent

from switchyard.dialects.anthropic import MessagesStream, message_dict, to_chat
from switchyard.dialects.anthropic.stream import HELD_PING_S
from switchyard.errors import InvalidRequest
from tests.unit.sse import call, chunk, completion, events

pytestmark = pytest.mark.unit

BASH = {"type": "tool_use", "id": "t1", "name": "bash", "input": {"command": "ls"}}
EVENT = pydantic.TypeAdapter(RawMessageStreamEvent)
PNG = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}}


def _chat(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    body = {"model": "claude-sonnet-5", "max_tokens": 64, "messages": messages}
    return to_chat(body).chat["messages"]


def _roles(messages: list[dict[str, Any]]) -> list[str]:
    return [m["role"] for m in messages]


@pytest.mark.parametrize(
    "empty",
    [
        [{"type": "thinking", "thinking": "Let me see.", "signature": "sig"}],
        [{"type": "redacted_thinking", "data": "EmwKAhgB"}],
        [],
        "",
        [{"type": "text", "text": ""}],
    ],
)
def test_an_assistant_turn_with_nothing_to_read_leaves_one_user_turn(empty: Any) -> None:
    """An interrupted Claude Code turn (thinking only, or nothing): the user turns around it
    become one user message, not ``user, user``."""
    messages = _chat(
        [
            {"role": "user", "content": "Fix the bug."},
            {"role": "assistant", "content": empty},
            {"role": "user", "content": [{"type": "text", "text": "Go on."}]},
        ]
    )
    assert messages == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Fix the bug."},
                {"type": "text", "text": "Go on."},
            ],
        }
    ]


def test_consecutive_turns_of_one_role_merge_in_order() -> None:
    messages = _chat(
        [
            {"role": "user", "content": "One."},
            {"role": "user", "content": [PNG, {"type": "text", "text": "Two."}]},
            {"role": "assistant", "content": "Looking."},
            {"role": "assistant", "content": [{"type": "thinking", "thinking": "t"}]},
            {"role": "assistant", "content": [BASH]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "a.py"}],
            },
            {"role": "user", "content": "And now?"},
        ]
    )
    assert messages == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "One."},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}},
                {"type": "text", "text": "Two."},
            ],
        },
        {
            "role": "assistant",
            "content": "Looking.",
            "tool_calls": [
                {
                    "id": "t1",
                    "type": "function",
                    "function": {"name": "bash", "arguments": '{"command":"ls"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "t1", "content": "a.py"},
        {"role": "user", "content": "And now?"},
    ]


def test_tool_results_still_follow_their_call_when_user_turns_merge() -> None:
    """Text sent before the tool result, in a turn of its own (the result came after an
    interruption): the result's ``tool`` message still directly follows the call."""
    messages = _chat(
        [
            {"role": "user", "content": "List files."},
            {"role": "assistant", "content": [BASH]},
            {"role": "user", "content": "[Request interrupted by user]"},
            {"role": "assistant", "content": []},
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t1",
                        "content": [{"type": "text", "text": "shot"}, PNG],
                    },
                    {"type": "text", "text": "Continue."},
                ],
            },
        ]
    )
    assert _roles(messages) == ["user", "assistant", "tool", "user"]
    assert messages[2]["tool_call_id"] == "t1"
    assert messages[3]["content"] == [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}},
        {"type": "text", "text": "[Request interrupted by user]"},
        {"type": "text", "text": "Continue."},
    ]


def test_an_empty_prefill_is_left_out() -> None:
    """A trailing assistant ``""`` used to reach the provider as an empty assistant message,
    after which chat servers answer nothing useful; ``[]`` vanished: both are left out now."""
    empties: list[Any] = ["", []]
    for empty in empties:
        messages = _chat(
            [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": empty}]
        )
        assert messages == [{"role": "user", "content": "Hi"}]


def test_a_system_turn_between_user_turns_keeps_them_apart() -> None:
    messages = _chat(
        [
            {"role": "user", "content": "a"},
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "b"},
        ]
    )
    assert _roles(messages) == ["user", "system", "user"]


def test_paths_still_name_the_block_at_fault() -> None:
    with pytest.raises(InvalidRequest) as caught:
        _chat(
            [
                {"role": "user", "content": "a"},
                {"role": "user", "content": [{"type": "text", "text": "b"}, {"type": "video"}]},
            ]
        )
    assert caught.value.param == "messages[1].content[1].type"
    with pytest.raises(InvalidRequest) as caught:
        _chat([{"role": "user", "content": "a"}, {"role": "user", "content": []}])
    assert caught.value.param == "messages[1].content"


# -- tool arguments the provider got wrong ---------------------------------------------------


def _whole(arguments: str) -> dict[str, Any]:
    """The ``input`` of a whole answer's tool call with these arguments."""
    context = to_chat(_request()).context
    calls = [{"id": "c1", "type": "function", "function": {"name": "bash", "arguments": arguments}}]
    message = Message.model_validate(
        message_dict(completion(finish="tool_calls", tool_calls=calls), context)
    )
    return message.content[0].input  # type: ignore[union-attr]


def _streamed(fragments: list[str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The ``input`` the SDK's stream accumulator folds the events into, and the events."""
    stream = MessagesStream(to_chat(_request(stream=True)).context)
    out = stream.feed(chunk(tool_calls=[call(0, call_id="c1", name="bash")]))
    for fragment in fragments:
        out += stream.feed(chunk(tool_calls=[call(0, args=fragment)]))
    out += stream.feed(chunk(finish="tool_calls")) + stream.finish()
    snapshot = None
    buffers: dict[int, bytes] = {}
    decoded = [data for _, data in events(out)]
    for data in decoded:
        if data["type"] != "ping":
            snapshot = accumulate_event(
                event=EVENT.validate_python(data), current_snapshot=snapshot, json_bufs=buffers
            )
    assert snapshot is not None
    return snapshot.content[0].input, decoded  # type: ignore[union-attr]


def _request(**fields: Any) -> dict[str, Any]:
    return {
        "model": "claude-sonnet-5",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "List files."}],
        **fields,
    }


@pytest.mark.parametrize(
    ("fragments", "expected"),
    [
        (['{"command": ', '"ls -la"}'], {"command": "ls -la"}),
        (['{"command": "ls', " -la"], {"_raw_arguments": '{"command": "ls -la'}),  # cut short
        (["[1,", "2]"], {"_raw_arguments": "[1,2]"}),
        (["ls -la"], {"_raw_arguments": "ls -la"}),
        (['"ls"'], {"_raw_arguments": '"ls"'}),
        (['{"command": "ls"}', "}"], {"command": "ls"}),  # a stray brace: the object
        # The object JSON-encoded once more (a hermes-style tool parser): the object.
        (['"{\\"command\\": ', '\\"ls\\"}"'], {"command": "ls"}),
        (["null"], {}),
        ([" "], {}),
        ([], {}),
    ],
)
def test_tool_input_is_an_object_and_the_same_streamed_or_not(
    fragments: list[str], expected: dict[str, Any]
) -> None:
    """Arguments cut short gave ``{}`` silently (whole) and text the SDK folds into ``{}``
    (streamed); an array gave ``{}`` whole but the array streamed. Now neither mode hands the
    client anything but an object, the same one, and bad arguments are kept for the model to
    read back."""
    assert _whole("".join(fragments)) == expected
    streamed, decoded = _streamed(fragments)
    assert streamed == expected
    deltas = [d["delta"] for d in decoded if d["type"] == "content_block_delta"]
    assert len(deltas) == (1 if fragments else 0)  # one, when its block ends


def test_kept_raw_arguments_go_back_to_the_model_as_valid_json() -> None:
    """Next turn the client sends the tool use back: chat servers that parse the arguments of
    the history (vLLM's Mistral tokenizer does) get JSON."""
    messages = _chat(
        [
            {"role": "user", "content": "List files."},
            {
                "role": "assistant",
                "content": [
                    {
                        "type": "tool_use",
                        "id": "c1",
                        "name": "bash",
                        "input": {"_raw_arguments": '{"command": "ls'},
                    }
                ],
            },
        ]
    )
    arguments = messages[1]["tool_calls"][0]["function"]["arguments"]
    assert json.loads(arguments) == {"_raw_arguments": '{"command": "ls'}


def test_held_arguments_keep_the_stream_alive() -> None:
    """A long call's arguments are held until its block ends: pings go out meanwhile."""
    now = [0.0]
    stream = MessagesStream(to_chat(_request(stream=True)).context, clock=lambda: now[0])
    stream.feed(chunk(tool_calls=[call(0, call_id="c1", name="write")]))
    quiet = [stream.feed(chunk(tool_calls=[call(0, args='{"text": "')]))]
    for _ in range(3):
        now[0] += HELD_PING_S / 2
        quiet.append(stream.feed(chunk(tool_calls=[call(0, args="more ")])))
    names = [[name for name, _ in events(out)] if out else [] for out in quiet]
    assert names == [[], [], ["ping"], []]
    end = events(stream.feed(chunk(tool_calls=[call(0, args='"}')])) + stream.finish())
    assert end[0][1]["delta"] == {
        "type": "input_json_delta",
        "partial_json": '{"text":"more more more "}',
    }


def test_arguments_of_a_waiting_call_keep_the_stream_alive_too() -> None:
    now = [0.0]
    stream = MessagesStream(to_chat(_request(stream=True)).context, clock=lambda: now[0])
    stream.feed(chunk(tool_calls=[call(0, call_id="c1", name="read", args="{}")]))
    stream.feed(chunk(tool_calls=[call(1, call_id="c2", name="write", args='{"text": "')]))
    now[0] += HELD_PING_S
    out = stream.feed(chunk(tool_calls=[call(1, args='a"}')]))
    assert [name for name, _ in events(out)] == ["ping"]
    decoded = [d for _, d in events(stream.finish())]
    deltas = [d["delta"]["partial_json"] for d in decoded if d["type"] == "content_block_delta"]
    assert deltas == ["{}", '{"text":"a"}']


# -- small details -----------------------------------------------------------------------------


def test_a_text_documents_title_reaches_the_model() -> None:
    document = {
        "type": "document",
        "title": "CONTRIBUTING.md",
        "source": {"type": "text", "media_type": "text/plain", "data": "Run the tests."},
    }
    untitled = {**document}
    del untitled["title"]
    messages = _chat([{"role": "user", "content": [document, untitled]}])
    assert messages[0]["content"] == [
        {"type": "text", "text": "CONTRIBUTING.md\n\nRun the tests."},
        {"type": "text", "text": "Run the tests."},
    ]
    with pytest.raises(InvalidRequest) as caught:
        _chat([{"role": "user", "content": [{**document, "title": 7}]}])
    assert caught.value.param == "messages[0].content[0].title"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("Error: exit 1", "Error: exit 1"),
        ("error: no such file", "error: no such file"),
        ([{"type": "text", "text": "Error: exit 1"}, {"type": "text", "text": "log"}], None),
        ("exit 1", "Error: exit 1"),
        ("Errors: 3 found", "Error: Errors: 3 found"),
    ],
)
def test_a_failed_tool_result_that_says_error_already_is_not_marked_twice(
    content: Any, expected: str | None
) -> None:
    """A failed result whose text opens with ``Error:`` already became ``Error: Error: ...``."""
    messages = _chat(
        [
            {"role": "user", "content": "List files."},
            {"role": "assistant", "content": [BASH]},
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t1",
                        "is_error": True,
                        "content": content,
                    }
                ],
            },
        ]
    )
    tool = messages[2]
    if expected is None:
        assert tool["content"] == content
    else:
        assert tool["content"] == expected


def test_a_stop_sequence_named_by_sglang_is_the_stop_reason() -> None:
    """SGLang names the stop string that matched ``matched_stop`` (vLLM: ``stop_reason``)."""
    context = to_chat(_request(stop_sequences=["</answer>", "DONE"])).context
    whole = Message.model_validate(
        message_dict(completion(content="42", matched_stop="</answer>"), context)
    )
    assert (whole.stop_reason, whole.stop_sequence) == ("stop_sequence", "</answer>")
    eos = Message.model_validate(message_dict(completion(content="42", matched_stop=2), context))
    assert (eos.stop_reason, eos.stop_sequence) == ("end_turn", None)  # a stop token id
    stream = MessagesStream(to_chat(_request(stream=True, stop_sequences=["DONE"])).context)
    out = stream.feed(chunk(content="42")) + stream.feed(chunk(finish="stop", matched_stop="DONE"))
    end = events(out + stream.finish())[-2][1]
    assert end["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "DONE"}


# -- reasoning ---------------------------------------------------------------------------------

THINKING = {"type": "enabled", "budget_tokens": 2048}


def _reasoned(**message: Any) -> bytes:
    body = json.loads(completion(content="Use ls."))
    body["choices"][0]["message"].update(message)
    return json.dumps(body).encode()


def _thinking_chunk(**delta: Any) -> bytes:
    body = json.loads(chunk(content=""))
    body["choices"][0]["delta"] = delta
    return json.dumps(body).encode()


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_reasoning_is_a_thinking_block_when_the_request_asked_for_thinking(field: str) -> None:
    """vLLM's reasoning parsers (DeepSeek-R1, Qwen3, gpt-oss) send the thoughts apart: they
    were dropped. With ``thinking`` enabled they lead the Message as a ``thinking`` block."""
    reply = _reasoned(**{field: "The user wants a listing."})
    context = to_chat(_request(thinking=THINKING)).context
    message = Message.model_validate(message_dict(reply, context))
    thinking, text = message.content
    assert thinking.type == "thinking"
    assert (thinking.thinking, thinking.signature) == ("The user wants a listing.", "")
    assert text.type == "text"
    # Not asked for (or disabled): the answer alone, as before.
    for fields in ({}, {"thinking": {"type": "disabled"}}):
        plain = Message.model_validate(message_dict(reply, to_chat(_request(**fields)).context))
        assert [b.type for b in plain.content] == ["text"]


def test_reasoning_sent_as_an_object_is_not_a_broken_answer() -> None:
    context = to_chat(_request(thinking=THINKING)).context
    message = Message.model_validate(message_dict(_reasoned(reasoning={"effort": "low"}), context))
    assert [b.type for b in message.content] == ["text"]


def test_streamed_reasoning_is_a_thinking_block_before_the_text() -> None:
    stream = MessagesStream(to_chat(_request(stream=True, thinking=THINKING)).context)
    out = b"".join(
        [
            stream.feed(_thinking_chunk(role="assistant", reasoning_content="Listing ")),
            stream.feed(_thinking_chunk(reasoning_content="files.")),
            stream.feed(chunk(content="Use ls.")),
            stream.feed(chunk(finish="stop")),
            stream.finish(),
        ]
    )
    snapshot = None
    buffers: dict[int, bytes] = {}
    decoded = [data for _, data in events(out)]
    for data in decoded:
        if data["type"] != "ping":
            snapshot = accumulate_event(
                event=EVENT.validate_python(data), current_snapshot=snapshot, json_bufs=buffers
            )
    assert snapshot is not None
    thinking, text = snapshot.content
    assert thinking.type == "thinking"
    assert (thinking.thinking, thinking.signature) == ("Listing files.", "")
    assert text.type == "text"
    assert text.text == "Use ls."
    assert [d["delta"]["type"] for d in decoded if d["type"] == "content_block_delta"] == [
        "thinking_delta",
        "thinking_delta",
        "text_delta",
    ]
    # Without thinking asked for, the stream carries the answer alone.
    plain = MessagesStream(to_chat(_request(stream=True)).context)
    out = plain.feed(_thinking_chunk(reasoning_content="x")) + plain.feed(chunk(content="y"))
    starts = [d for _, d in events(out + plain.finish()) if d["type"] == "content_block_start"]
    assert [s["content_block"]["type"] for s in starts] == ["text"]


def test_a_thinking_block_sent_back_next_turn_is_dropped() -> None:
    messages = _chat(
        [
            {"role": "user", "content": "List files."},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "Listing files.", "signature": ""},
                    {"type": "text", "text": "Use ls."},
                ],
            },
            {"role": "user", "content": "Thanks."},
        ]
    )
    assert messages[1] == {"role": "assistant", "content": "Use ls."}
