"""How litellm's chunks are shaped as OpenAI's (providers/litellm_answer): pure logic."""

from __future__ import annotations

from typing import Any

import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletionChunk

from switchyard.workers.modelproxy.providers.litellm_answer import ChatStream

pytestmark = pytest.mark.unit


def _chunk(*choices: dict[str, Any]) -> dict[str, Any]:
    return {"id": "r1", "object": "chat.completion.chunk", "created": 7, "choices": list(choices)}


def test_a_choice_left_open_ends_as_the_finished_ones_did() -> None:
    stream = ChatStream("m")
    _shaped(stream, _chunk({"index": 0, "delta": {"content": "a"}}, {"index": 1, "delta": {}}))
    # A bare finish_reason: held until the end (nothing else in it to send now).
    assert stream.chunk(_chunk({"index": 0, "delta": {}, "finish_reason": "length"})) is None

    end = stream.closing()

    assert end == {
        "id": "chatcmpl-r1",
        "object": "chat.completion.chunk",
        "created": 7,
        "model": "m",
        "choices": [
            {"index": 0, "delta": {}, "finish_reason": "length", "logprobs": None},
            {"index": 1, "delta": {}, "finish_reason": "length", "logprobs": None},
        ],
    }
    assert stream.closing() is None  # once


def test_choices_none_finished_end_with_stop() -> None:
    stream = ChatStream("m")
    _shaped(stream, _chunk({"index": 0, "delta": {"content": "a"}}, {"index": 1, "delta": {}}))

    end = stream.closing()

    assert end is not None
    assert [(c["index"], c["finish_reason"]) for c in end["choices"]] == [(0, "stop"), (1, "stop")]


def test_a_choice_left_open_with_tool_calls_ends_with_tool_calls() -> None:
    """Gemini with `n: 2`: choice 0 ended `stop`, choice 1 called a tool and never got a
    finish_reason; it was closed `stop` (the first's), and agent loops that run calls on
    `finish_reason == "tool_calls"` skipped it. A choice that called tools ends so now."""
    stream = ChatStream("m")
    call = {"index": 0, "id": "c1", "type": "function", "function": {"name": "f"}}
    _shaped(
        stream,
        _chunk(
            {"index": 0, "delta": {"content": "a"}, "finish_reason": "stop"},
            {"index": 1, "delta": {"tool_calls": [call]}},
            {"index": 2, "delta": {"content": "b"}},
        ),
    )

    end = stream.closing()

    assert end is not None
    assert [(c["index"], c["finish_reason"]) for c in end["choices"]] == [
        (0, "stop"),  # its own, held until the end
        (1, "tool_calls"),
        (2, "stop"),
    ]


def test_a_finish_reason_is_said_once_in_the_choices_last_chunk() -> None:
    """What OpenAI sends: a choice's ``finish_reason`` is null on every chunk but its last.
    litellm put one on chunks a choice had more after (Gemini's tool-call pieces; a provider's
    own): the client got it mid-answer, and a client SDK may stop reading at the first one.
    Each is held now (its chunk goes without it), and the end says the last one, once."""
    stream = ChatStream("m")
    call = {"index": 0, "id": "c1", "type": "function", "function": {"name": "f"}}
    first = _shaped(
        stream,
        _chunk({"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": "tool_calls"}),
    )
    more = {"index": 0, "function": {"arguments": "{}"}}
    second = _shaped(
        stream, _chunk({"index": 0, "delta": {"tool_calls": [more]}, "finish_reason": "stop"})
    )
    # A bare finish_reason with its logprobs still goes (without the reason).
    scored = _shaped(
        stream,
        _chunk({"index": 0, "delta": {}, "finish_reason": "tool_calls", "logprobs": {"c": []}}),
    )

    assert [c["choices"][0]["finish_reason"] for c in (first, second, scored)] == [None] * 3
    assert stream.finished(1)  # the whole answer's grace still knows
    end = stream.closing()
    assert end is not None
    assert [(c["index"], c["finish_reason"]) for c in end["choices"]] == [(0, "tool_calls")]
    assert stream.closing() is None  # once
    # An OpenAI SDK reads the whole stream as one answer that called its tool.
    state = ChatCompletionStreamState()
    for chunk in (first, second, scored, end):
        state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    done = state.get_final_completion().choices[0]
    assert done.finish_reason == "tool_calls"
    assert [c.function.arguments for c in done.message.tool_calls or []] == ["{}"]


def test_a_bare_finish_reasons_answer_wide_fields_go_on_the_closing_chunk() -> None:
    """The provider's last chunk says the ``finish_reason`` alone, with its
    ``system_fingerprint`` and ``service_tier`` (OpenAI's are on every chunk): the chunk is
    not sent (its reason is held), but those fields were lost with it. The closing chunk
    carries the last said."""
    stream = ChatStream("m")
    opened = _shaped(stream, _chunk({"index": 0, "delta": {}, "finish_reason": None}))
    assert opened["choices"][0]["delta"] == {"role": "assistant"}
    text = _shaped(stream, _chunk({"index": 0, "delta": {"content": "hi"}}))
    assert "system_fingerprint" not in text
    said = {"system_fingerprint": "fp_9", "service_tier": "default"}
    bare = {**_chunk({"index": 0, "delta": {}, "finish_reason": "stop"}), **said}
    assert stream.chunk(bare) is None
    end = stream.closing()
    assert end is not None
    assert {k: end.get(k) for k in said} == said, end
    assert [(c["index"], c["finish_reason"]) for c in end["choices"]] == [(0, "stop")]
    state = ChatCompletionStreamState()
    for chunk in (opened, text, end):
        state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    done = state.get_final_completion()
    assert (done.system_fingerprint, done.choices[0].finish_reason) == ("fp_9", "stop")


def test_a_first_chunk_with_a_reason_alone_still_opens_its_choice() -> None:
    """Not dropped as a bare ``finish_reason``: it opens its choice (its role), so the adapter
    hears that the provider began."""
    stream = ChatStream("m")
    first = _shaped(stream, _chunk({"index": 0, "delta": {}, "finish_reason": "stop"}))
    assert first["choices"] == [
        {"index": 0, "delta": {"role": "assistant"}, "finish_reason": None, "logprobs": None}
    ]


def test_each_choice_opens_with_its_role() -> None:
    stream = ChatStream("m")
    first = _shaped(
        stream,
        _chunk(
            {"index": 0, "delta": {"content": "a", "role": "assistant"}},
            {"index": 1, "delta": {"content": "a"}},
        ),
    )
    later = _shaped(stream, _chunk({"index": 1, "delta": {"content": "b"}}))

    assert [c["delta"] for c in first["choices"]] == [
        {"content": "a", "role": "assistant"},
        {"content": "a", "role": "assistant"},
    ]
    assert later["choices"][0]["delta"] == {"content": "b"}


def _call(call_id: str | None, arguments: str, name: str | None = "f") -> dict[str, Any]:
    """A streamed tool call's piece as litellm dumps it: under index 0."""
    function = {"name": name, "arguments": arguments} if name else {"arguments": arguments}
    piece: dict[str, Any] = {"index": 0, "type": "function", "function": function}
    if call_id:
        piece["id"] = call_id
    return piece


def test_calls_sharing_litellms_index_stay_apart_when_their_ids_differ() -> None:
    """A provider that sends each whole call in a chunk of its own, without an index, gets
    index 0 for every call from litellm: the second call (another id) was taken for more of
    the first, its id, type and name dropped; a client read one call with arguments
    `{"x":1}{"y":2}`. A known index with a new id begins a new call now."""
    stream = ChatStream("m")
    chunks = [
        _shaped(stream, _chunk({"index": 0, "delta": {"tool_calls": [call]}}))
        for call in (
            _call("call_a", '{"x":'),
            _call("call_a", "1}", name=None),  # its id again: the same call
            _call("call_b", '{"y":2}', name="g"),
            _call(None, "", name=None),  # no id: the latest call under that index
        )
    ]

    named = {"type": "function", "function": {"name": "f", "arguments": '{"x":'}}
    assert [c["choices"][0]["delta"]["tool_calls"] for c in chunks] == [
        [{"index": 0, "id": "call_a", **named}],
        [{"index": 0, "function": {"arguments": "1}"}}],
        [{"index": 1, "id": "call_b", **named, "function": {"name": "g", "arguments": '{"y":2}'}}],
        [{"index": 1, "function": {"arguments": ""}}],
    ]
    state = ChatCompletionStreamState()
    for chunk in [*chunks, stream.closing()]:
        state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    calls = state.get_final_completion().choices[0].message.tool_calls or []
    assert [(c.id, c.function.name, c.function.arguments) for c in calls] == [
        ("call_a", "f", '{"x":1}'),
        ("call_b", "g", '{"y":2}'),
    ]


def test_a_choices_calls_are_numbered_from_zero_across_new_ids() -> None:
    stream = ChatStream("m")
    numbered = []
    for choice, call_id in ((0, "a"), (1, "b"), (1, "c"), (0, "d")):
        call = _call(call_id, "{}")
        chunk = _shaped(stream, _chunk({"index": choice, "delta": {"tool_calls": [call]}}))
        numbered.append(chunk["choices"][0]["delta"]["tool_calls"][0]["index"])

    assert numbered == [0, 0, 1, 1]


def _shaped(stream: ChatStream, doc: dict[str, Any]) -> dict[str, Any]:
    """``stream``'s shape of ``doc``, which holds more than a bare ``finish_reason``."""
    out = stream.chunk(doc)
    assert out is not None
    return out
