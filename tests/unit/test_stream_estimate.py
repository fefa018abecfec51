"""A streamed answer without the provider's count is billed a quarter token per byte of what
its chunks delivered (text, reasoning, tool calls' names and arguments), as a whole answer is,
not a token per chunk: one chunk of a whole answer was billed 1 token, a stream of empty
keep-alive deltas a token each."""

from __future__ import annotations

import json
from typing import Any

import pytest

from switchyard.dialects import anthropic, responses
from switchyard.schemas.openai import Usage
from switchyard.workers.modelproxy import billing
from switchyard.workers.modelproxy.billing import CLIENT_CLOSED
from switchyard.workers.modelproxy.estimate import chunk_size
from switchyard.workers.modelproxy.replay import REPLAY_MAX_BYTES, SentChunks
from tests.unit.test_replay_bound import _job

pytestmark = pytest.mark.unit

TEXT = "The weather in Paris is sunny, 21 degrees, light wind from the west. " * 30


def _chat(delta: dict[str, Any], **choice: Any) -> bytes:
    doc = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "system_fingerprint": "fp_0123456789",
        "choices": [{"index": 0, "delta": delta, "finish_reason": None, **choice}],
    }
    return json.dumps(doc).encode()


def _sse(event: dict[str, Any]) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


def test_a_chat_chunk_counts_its_text_reasoning_and_tool_calls() -> None:
    size = chunk_size("chat")
    assert size(_chat({"role": "assistant", "content": ""})) == 0
    assert size(_chat({}, finish_reason="stop")) == 0
    assert size(_chat({"content": TEXT})) == len(TEXT)
    assert size(_chat({"content": "é"})) == 2  # bytes, as the prompt counts them
    assert size(_chat({"reasoning_content": "hmm"})) == 3
    # Newer vLLM sends both names with the same text: counted once.
    assert size(_chat({"reasoning_content": "hmm", "reasoning": "hmm"})) == 3
    call = {"index": 0, "id": "call_1", "function": {"name": "get_weather", "arguments": '{"ci'}}
    assert size(_chat({"tool_calls": [call]})) == len("get_weather") + 4
    assert chunk_size("complete")(json.dumps({"choices": [{"text": "abc"}]}).encode()) == 3
    assert size(b"not json") == 8  # what cannot be read counts its bytes
    assert chunk_size("embed")(b"anything") == 0


def test_a_messages_stream_counts_its_deltas_not_its_envelope() -> None:
    size = chunk_size("messages")
    start = {"type": "message_start", "message": {"id": "msg_1", "content": [], "usage": {}}}
    assert size(_sse(start)) == 0
    tool = {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}
    assert size(_sse({"type": "content_block_start", "index": 1, "content_block": tool})) == 11
    frames = b"".join(
        _sse({"type": "content_block_delta", "index": 0, "delta": delta})
        for delta in (
            {"type": "thinking_delta", "thinking": "hmm"},
            {"type": "signature_delta", "signature": "c2lnbmF0dXJl" * 20},
            {"type": "text_delta", "text": TEXT},
            {"type": "input_json_delta", "partial_json": '{"city"'},
        )
    )
    assert size(frames) == 3 + len(TEXT) + 7  # several events in one chunk, each counted
    stop = {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {}}
    assert size(_sse(stop) + _sse({"type": "message_stop"}) + b"event: ping\n\n") == 0


def test_a_responses_stream_counts_each_delta_once() -> None:
    size = chunk_size("responses")
    events: list[dict[str, Any]] = [
        {"type": "response.output_text.delta", "delta": TEXT, "item_id": "msg_1"},
        {"type": "response.output_text.done", "text": TEXT, "item_id": "msg_1"},
        {"type": "response.reasoning_summary_text.delta", "delta": "hmm"},
        {"type": "response.output_item.added", "item": {"type": "function_call", "name": "f"}},
        {"type": "response.function_call_arguments.delta", "delta": "{}"},
        {"type": "response.function_call_arguments.done", "arguments": "{}"},
        {"type": "response.output_item.done", "item": {"type": "function_call", "name": "f"}},
        {"type": "response.audio.delta", "delta": "QUFBQQ=="},
    ]
    assert sum(size(_sse(e)) for e in events) == len(TEXT) + 3 + 1 + 2


def test_a_translated_stream_counts_what_its_chat_chunks_generated() -> None:
    chunks = [
        _chat({"role": "assistant", "content": ""}),
        _chat({"content": TEXT}),
        _chat({"reasoning_content": "hmm"}),
        _chat({}, finish_reason="stop"),
    ]
    messages = anthropic.MessagesStream(
        anthropic.to_chat(
            {"model": "m", "max_tokens": 9, "messages": [{"role": "user", "content": "x"}]}
        ).context
    )
    answer = responses.ResponsesStream(responses.to_chat({"model": "m", "input": "x"}).context)
    for out in (messages, answer):
        for chunk in chunks:
            out.feed(chunk)
        assert out.generated == len(TEXT) + 3


def test_a_stream_without_usage_is_billed_its_text_not_its_chunks() -> None:
    job = _job()
    job.called = True
    job.chunks.append(_chat({"role": "assistant", "content": ""}))
    job.chunks.append(_chat({"content": TEXT}))  # 2,070 bytes in one chunk
    job.chunks.append(_chat({}, finish_reason="stop"))
    found = billing.billed(job)
    assert found is not None
    usage, estimated = found
    assert estimated
    assert usage.completion_tokens == -(-len(TEXT) // 4) == 518


def test_a_stream_cut_after_its_opening_count_is_billed_what_it_delivered() -> None:
    """Anthropic's ``message_start`` says 1 output token; a stream cut after it delivered more."""
    job = _job()
    job.called, job.status = True, 502
    job.chunks.append(_chat({"role": "assistant", "content": ""}))
    job.usage = Usage(prompt_tokens=7, completion_tokens=1, total_tokens=8)  # before the content
    job.chunks.append(_chat({"content": TEXT}))
    assert billing.measures_chunks(job)
    found = billing.billed(job)
    assert found is not None
    usage, estimated = found
    assert estimated
    assert (usage.prompt_tokens, usage.completion_tokens) == (7, 518)


def test_a_stream_whose_final_count_came_before_its_caller_left_is_billed_that_count() -> None:
    """A chat stream's usage chunk came, then its caller left (499): the provider's count, not
    the estimate of the delivered bytes (3-9% higher, and flagged an estimate: a review)."""
    for past_bound in (False, True):
        job = _job()
        job.called, job.status = True, CLIENT_CLOSED
        filler = _chat({"content": "x" * 1000})
        for _ in range(REPLAY_MAX_BYTES // len(filler) + 1 if past_bound else 0):
            job.chunks.append(filler)
        job.chunks.append(_chat({"content": TEXT}))
        job.chunks.append(_chat({}, finish_reason="stop"))
        job.usage = Usage(prompt_tokens=7, completion_tokens=400, total_tokens=407)
        job.chunks.append(b'{"id":"chatcmpl-1","choices":[],"usage":{"completion_tokens":400}}')
        assert job.chunks.complete is not past_bound
        assert not billing.measures_chunks(job)
        found = billing.billed(job)
        assert found is not None
        usage, estimated = found
        assert not estimated
        assert usage.completion_tokens == 400


def test_an_answer_past_the_replay_bound_is_still_measured_whole() -> None:
    chunk = _chat({"content": "x" * 1000})
    job = _job()
    job.called, job.status = True, CLIENT_CLOSED
    count = REPLAY_MAX_BYTES // len(chunk) + 10
    for _ in range(count):
        job.chunks.append(chunk)
    assert not job.chunks.complete  # freed: measured as they passed
    found = billing.billed(job)
    assert found is not None
    usage, _ = found
    assert usage.completion_tokens == count * 250


def test_chunks_measured_before_and_after_the_bound_add_up() -> None:
    kept = SentChunks(limit=10, size=lambda payload: payload.count(b"a"))
    for part in (b"aaaa", b"bbba", b"aaaaa", b"a"):
        kept.append(part)
    assert not kept.complete
    assert kept.generated() == 4 + 1 + 5 + 1
    assert SentChunks(size=len).generated() == 0
