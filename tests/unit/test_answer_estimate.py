"""An answer without the provider's usage is billed an estimate of what the model generated, not
of the JSON around it: the same 7-word answer was billed 56 completion tokens as a chat
completion, 62 as a Message and 177 as a Response (9 streamed)."""

from __future__ import annotations

import json

import pytest

from switchyard.workers.modelproxy.estimate import answer_tokens, prompt_tokens

pytestmark = pytest.mark.unit

TEXT = "echo: one two three four five six"  # 33 bytes: 9 tokens, rounded up
ARGS = '{"city": "Paris"}'


def _chat(message: dict[str, object]) -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "system_fingerprint": "fp_0123456789",
        }
    ).encode()


def test_the_same_text_costs_the_same_in_every_dialect() -> None:
    chat = _chat({"role": "assistant", "content": TEXT})
    message = json.dumps(
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "m",
            "content": [{"type": "text", "text": TEXT}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
    ).encode()
    response = json.dumps(
        {
            "id": "resp_1",
            "object": "response",
            "status": "completed",
            "output": [
                {
                    "id": "msg_1",
                    "type": "message",
                    "role": "assistant",
                    "status": "completed",
                    "content": [
                        {"type": "output_text", "text": TEXT, "annotations": [], "logprobs": []}
                    ],
                }
            ],
            "usage": None,
            "tools": [],
            "text": {"format": {"type": "text"}},
            "metadata": {},
        }
    ).encode()
    completion = json.dumps({"object": "text_completion", "choices": [{"text": TEXT}]}).encode()
    assert answer_tokens("chat", chat) == 9
    assert answer_tokens("messages", message) == 9
    assert answer_tokens("responses", response) == 9
    assert answer_tokens("complete", completion) == 9


def test_tool_calls_refusals_and_reasoning_are_generated_too() -> None:
    function = {"name": "get_weather", "arguments": ARGS}
    call = {"id": "call_1", "type": "function", "function": function}
    chat = _chat({"role": "assistant", "content": None, "tool_calls": [call]})
    assert answer_tokens("chat", chat) == -(-len("get_weather" + ARGS) // 4)
    parts = _chat({"role": "assistant", "content": [{"type": "text", "text": TEXT}]})
    assert answer_tokens("chat", parts) == 9
    said = _chat({"role": "assistant", "content": None, "refusal": "no", "reasoning_content": "hm"})
    assert answer_tokens("chat", said) == 1
    tool_use = json.dumps(
        {"content": [{"type": "tool_use", "id": "t", "name": "get_weather", "input": {"a": 1}}]}
    ).encode()
    # A tool_use input counts its JSON as sent.
    assert answer_tokens("messages", tool_use) == -(-len('get_weather{"a": 1}') // 4)
    function_call = json.dumps(
        {"output": [{"type": "function_call", "name": "get_weather", "arguments": ARGS}]}
    ).encode()
    assert answer_tokens("responses", function_call) == -(-len("get_weather" + ARGS) // 4)
    # Multi-byte text counts its bytes, as the prompt does.
    assert answer_tokens("chat", _chat({"role": "assistant", "content": "日本語"})) == 3


def test_embeddings_generate_nothing_and_an_odd_body_counts_its_bytes() -> None:
    assert answer_tokens("embed", b'{"data": [{"embedding": [0.1, 0.2]}]}') == 0
    assert answer_tokens("chat", b"not json at all") == 4
    assert answer_tokens("chat", b'{"choices": "odd"}') == 5
    assert prompt_tokens(0) == 1
    assert prompt_tokens(400) == 100
