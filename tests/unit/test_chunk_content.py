"""Which streamed chunks carry some of the answer: the opening ones are held back until one
does (:mod:`switchyard.workers.modelproxy.stream_watch`), so a failure after them still falls
back, and the time to the first token is measured at content."""

from __future__ import annotations

import json
from typing import Any

import pytest

from switchyard.workers.modelproxy.providers.chunk_content import has_content

pytestmark = pytest.mark.unit


def _chunk(*choices: dict[str, Any], **extra: Any) -> bytes:
    return json.dumps(
        {"id": "c", "object": "chat.completion.chunk", "choices": list(choices), **extra}
    ).encode()


@pytest.mark.parametrize(
    "payload",
    [
        _chunk({"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}),
        _chunk({"index": 0, "delta": {"role": "assistant"}, "logprobs": None}),
        _chunk({"index": 0, "delta": {"content": None, "refusal": None, "tool_calls": []}}),
        _chunk({"index": 0, "delta": {}}),
        _chunk(prompt_filter_results=[{"prompt_index": 0}]),  # Azure's first chunk
        _chunk({"index": 0, "text": "", "finish_reason": None}),  # a legacy completion's
        _chunk(usage=None),
    ],
)
def test_an_opening_chunk_carries_no_content(payload: bytes) -> None:
    assert not has_content(payload)


@pytest.mark.parametrize(
    "payload",
    [
        _chunk({"index": 0, "delta": {"role": "assistant", "content": "Hi"}}),
        _chunk({"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1"}]}}),
        _chunk({"index": 0, "delta": {"refusal": "no"}}),
        _chunk({"index": 0, "delta": {"reasoning_content": "let me think"}}),
        _chunk({"index": 0, "delta": {"reasoning": "hmm"}}),
        _chunk({"index": 0, "delta": {"audio": {"id": "a"}}}),  # any field it does not know
        _chunk({"index": 0, "delta": {}, "logprobs": {"content": []}}),
        _chunk({"index": 0, "delta": {}, "finish_reason": "stop"}),  # an empty answer's end
        _chunk({"index": 0, "text": "Hi"}),
        _chunk({"index": 0, "delta": {}}, {"index": 1, "delta": {"content": "b"}}),
        b"not json",  # passed on at once, as before
        b'{"choices": "odd"}',
    ],
)
def test_a_chunk_with_any_of_the_answer_carries_content(payload: bytes) -> None:
    assert has_content(payload)
