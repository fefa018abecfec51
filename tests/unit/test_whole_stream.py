"""A whole answer to a streamed request, as the events a streaming server sends."""

from __future__ import annotations

import msgspec
import pytest

from switchyard.workers.modelproxy.providers.whole_stream import as_chunks

pytestmark = pytest.mark.unit

USAGE = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}


def test_a_chat_answer_becomes_one_chunk_per_choice_and_a_usage_chunk() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    answer = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 7,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "hi"},
                "finish_reason": "stop",
            },
            {
                "index": 1,
                "message": {"role": "assistant", "content": None, "tool_calls": [call]},
                "logprobs": None,
                "finish_reason": "tool_calls",
            },
        ],
        "usage": USAGE,
    }
    first, usage = (msgspec.json.decode(c) for c in as_chunks("chat", answer))
    assert first == {
        "id": "chatcmpl-1",
        "created": 7,
        "model": "m",
        "object": "chat.completion.chunk",
        "choices": [
            {
                "index": 0,
                "delta": {"role": "assistant", "content": "hi"},
                "logprobs": None,
                "finish_reason": "stop",
            },
            {
                "index": 1,
                "delta": {"role": "assistant", "tool_calls": [{"index": 0, **call}]},
                "logprobs": None,
                "finish_reason": "tool_calls",
            },
        ],
    }
    assert usage["choices"] == []
    assert usage["usage"] == USAGE


def test_a_legacy_completion_goes_as_it_came_with_its_usage_apart() -> None:
    answer = {
        "id": "cmpl-1",
        "object": "text_completion",
        "choices": [{"index": 0, "text": "hi", "logprobs": None, "finish_reason": "length"}],
        "usage": USAGE,
    }
    body, usage = (msgspec.json.decode(c) for c in as_chunks("complete", answer))
    assert body == {k: v for k, v in answer.items() if k != "usage"}
    assert usage["object"] == "text_completion"
    assert usage["usage"] == USAGE


@pytest.mark.parametrize("answer", [[], {"data": []}, {"choices": "x"}, "text"])
def test_what_is_no_completion_gives_no_chunks(answer: object) -> None:
    assert as_chunks("chat", answer) == []
