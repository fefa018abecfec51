"""How litellm's chunks are shaped as OpenAI's (providers/litellm_answer): pure logic."""

from __future__ import annotations

from typing import Any

import pytest

from switchyard.workers.modelproxy.providers.litellm_answer import ChatStream

pytestmark = pytest.mark.unit


def _chunk(*choices: dict[str, Any]) -> dict[str, Any]:
    return {"id": "r1", "object": "chat.completion.chunk", "created": 7, "choices": list(choices)}


def test_a_choice_left_open_ends_as_the_finished_ones_did() -> None:
    stream = ChatStream("m")
    stream.chunk(_chunk({"index": 0, "delta": {"content": "a"}}, {"index": 1, "delta": {}}))
    stream.chunk(_chunk({"index": 0, "delta": {}, "finish_reason": "length"}))

    end = stream.closing()

    assert end == {
        "id": "chatcmpl-r1",
        "object": "chat.completion.chunk",
        "created": 7,
        "model": "m",
        "choices": [{"index": 1, "delta": {}, "finish_reason": "length", "logprobs": None}],
    }
    assert stream.closing() is None  # once


def test_choices_none_finished_end_with_stop() -> None:
    stream = ChatStream("m")
    stream.chunk(_chunk({"index": 0, "delta": {"content": "a"}}, {"index": 1, "delta": {}}))

    end = stream.closing()

    assert end is not None
    assert [(c["index"], c["finish_reason"]) for c in end["choices"]] == [(0, "stop"), (1, "stop")]


def test_a_stream_whose_choices_all_finished_needs_no_end() -> None:
    stream = ChatStream("m")
    stream.chunk(_chunk({"index": 0, "delta": {"content": "a"}, "finish_reason": "stop"}))

    assert stream.closing() is None


def test_each_choice_opens_with_its_role() -> None:
    stream = ChatStream("m")
    first = stream.chunk(
        _chunk(
            {"index": 0, "delta": {"content": "a", "role": "assistant"}},
            {"index": 1, "delta": {"content": "a"}},
        )
    )
    later = stream.chunk(_chunk({"index": 1, "delta": {"content": "b"}}))

    assert [c["delta"] for c in first["choices"]] == [
        {"content": "a", "role": "assistant"},
        {"content": "a", "role": "assistant"},
    ]
    assert later["choices"][0]["delta"] == {"content": "b"}
