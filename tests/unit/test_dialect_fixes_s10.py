"""Agent-dialect translation defects found in session 10: what a translated Messages stream
says of its prompt before the answer, system turns inside a tool run, tool calls named late,
reasoning between a tool call's argument fragments."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import RawMessageStreamEvent

from switchyard.dialects import anthropic
from tests.unit.sse import chunk, events

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
