"""An answer without the provider's usage is billed an estimate of what the model generated, not
of the JSON around it: the same 7-word answer was billed 56 completion tokens as a chat
completion, 62 as a Message and 177 as a Response (9 streamed)."""

from __future__ import annotations

import base64
import json

import pytest

from switchyard.dialects import anthropic, responses
from switchyard.errors import DeadlineExceeded
from switchyard.ingress.estimate import request_tokens
from switchyard.schemas.openai import Usage
from switchyard.schemas.prompt_estimate import MEDIA_TOKENS
from switchyard.workers.modelproxy import billing
from switchyard.workers.modelproxy.estimate import answer_tokens, estimated, prompt_tokens
from tests.unit.test_deadline_billing import _job

pytestmark = pytest.mark.unit

TEXT = "echo: one two three four five six"  # 33 bytes: 9 tokens, rounded up
ARGS = '{"city": "Paris"}'
MESSAGES = anthropic.to_chat(
    {"model": "m", "max_tokens": 9, "messages": [{"role": "user", "content": "x"}]}
).context
RESPONSES = responses.to_chat({"model": "m", "input": "x"}).context


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
    assert prompt_tokens(b"") == 1
    assert prompt_tokens(b"x" * 400) == 100


def test_an_image_in_the_prompt_is_billed_as_the_edge_counted_it() -> None:
    """A request whose provider reported no usage is billed the prompt the edge admitted it on:
    an inline image counts ``MEDIA_TOKENS``, not a quarter token per byte of its base64 (a
    100 KiB image was billed ~34,000 prompt tokens where the edge had counted ~1,000)."""
    image = "data:image/png;base64," + base64.b64encode(bytes(range(256)) * 400).decode()
    body = json.dumps(
        {
            "model": "m",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "what is this?"},
                        {"type": "image_url", "image_url": {"url": image}},
                    ],
                }
            ],
        }
    ).encode()
    assert len(body) > 130_000
    assert prompt_tokens(body) == request_tokens(body, None, 1_000_000)
    assert MEDIA_TOKENS < prompt_tokens(body) < MEDIA_TOKENS + 100
    job = _job(DeadlineExceeded.status)
    job.msg.data = body
    found = billing.billed(job)
    assert found is not None
    assert found[0].prompt_tokens == prompt_tokens(body)
    shown = estimated(body, 9)
    assert shown.prompt_tokens == prompt_tokens(body)


def test_an_estimate_a_translated_answer_showed_is_billed_as_an_estimate() -> None:
    """Usage Switchyard estimated travels as :class:`Estimated`: billed flagged as an estimate
    (``prompt_tokens_estimated``), while a provider's count is not."""
    shown = estimated(b"x" * 400, 9)
    assert (shown.prompt_tokens, shown.completion_tokens, shown.total_tokens) == (100, 9, 109)
    job = _job(200)
    job.usage = shown
    assert billing.billed(job) == (shown, True)
    assert billing.usage_event(job, None, estimated=True).prompt_tokens_estimated == 100
    job.usage = Usage(prompt_tokens=100, completion_tokens=9, total_tokens=109)
    assert billing.billed(job) == (job.usage, False)


def test_the_dialects_show_an_estimate_only_without_a_count() -> None:
    chat = _chat({"role": "assistant", "content": TEXT})
    shown = estimated(b"x" * 400, 9)
    message = json.loads(anthropic.to_message(chat, MESSAGES, estimate=shown))
    assert message["usage"]["input_tokens"] == 100
    assert message["usage"]["output_tokens"] == 9
    response = responses.response_dict(chat, RESPONSES, estimate=shown)
    assert response["usage"]["input_tokens"] == 100
    assert response["usage"]["total_tokens"] == 109
    counted = json.loads(chat) | {
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    }
    message = json.loads(anthropic.to_message(counted, MESSAGES, estimate=shown))
    assert (message["usage"]["input_tokens"], message["usage"]["output_tokens"]) == (5, 2)
    stream = anthropic.MessagesStream(MESSAGES)
    stream.feed(json.dumps({"choices": [{"index": 0, "delta": {"content": TEXT}}]}).encode())
    closing = stream.finish(shown).decode()
    assert '"usage":{"input_tokens":100,' in closing
    assert '"output_tokens":9' in closing
    rstream = responses.ResponsesStream(RESPONSES)
    rstream.feed(json.dumps({"choices": [{"index": 0, "delta": {"content": TEXT}}]}).encode())
    assert '"input_tokens":100' in rstream.finish(shown).decode()
