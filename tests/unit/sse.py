"""Helpers shared by the dialect tests: split SSE bytes, script chat chunks."""

from __future__ import annotations

import json
from typing import Any


def events(stream: bytes) -> list[tuple[str, dict[str, Any]]]:
    """``(event name, decoded data)`` per frame; every frame must be ``event:`` + ``data:``."""
    out = []
    assert stream.endswith(b"\n\n"), stream[-80:]
    for raw in stream.split(b"\n\n")[:-1]:
        event, data = raw.split(b"\n")
        assert event.startswith(b"event: "), raw
        assert data.startswith(b"data: "), raw
        out.append((event[7:].decode(), json.loads(data[6:])))
    return out


def chunk(
    *,
    content: str | None = None,
    tool_calls: list[dict[str, Any]] | None = None,
    finish: str | None = None,
    usage: dict[str, Any] | None = None,
    model: str | None = None,
    refusal: str | None = None,
    **choice_extra: Any,
) -> bytes:
    """One ``chat.completion.chunk`` as an OpenAI-compatible server sends it."""
    delta: dict[str, Any] = {}
    if content is not None:
        delta["content"] = content
    if refusal is not None:
        delta["refusal"] = refusal
    if tool_calls is not None:
        delta["tool_calls"] = tool_calls
    body: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": model or "gpt-4o-2024-08-06",
        "choices": []
        if usage is not None and not delta and finish is None
        else [{"index": 0, "delta": delta, "finish_reason": finish, **choice_extra}],
        "usage": usage,
    }
    return json.dumps(body).encode()


def completion(
    *,
    content: str | None = None,
    tool_calls: list[dict[str, Any]] | None = None,
    finish: str = "stop",
    usage: dict[str, Any] | None = None,
    refusal: str | None = None,
    **choice_extra: Any,
) -> bytes:
    """A whole ``chat.completion``."""
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": refusal}
    if tool_calls is not None:
        message["tool_calls"] = tool_calls
    return json.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1700000000,
            "model": "gpt-4o-2024-08-06",
            "choices": [{"index": 0, "message": message, "finish_reason": finish, **choice_extra}],
            "usage": usage or {"prompt_tokens": 20, "completion_tokens": 7, "total_tokens": 27},
        }
    ).encode()


def call(
    index: int, *, call_id: str | None = None, name: str | None = None, args: str = ""
) -> dict[str, Any]:
    """One streamed tool call fragment."""
    fragment: dict[str, Any] = {"index": index, "function": {"arguments": args}}
    if call_id is not None:
        fragment["id"] = call_id
        fragment["type"] = "function"
    if name is not None:
        fragment["function"]["name"] = name
    return fragment


USAGE = {
    "prompt_tokens": 120,
    "completion_tokens": 30,
    "total_tokens": 150,
    "prompt_tokens_details": {"cached_tokens": 100},
    "completion_tokens_details": {"reasoning_tokens": 8},
}


def whole_call(call_id: str, args: str, index: int | None) -> dict[str, Any]:
    """A whole tool call in one fragment, ``index`` optional (Gemini's OpenAI endpoint sends
    none)."""
    fragment: dict[str, Any] = {
        "id": call_id,
        "type": "function",
        "function": {"name": "get_weather", "arguments": args},
    }
    if index is not None:
        fragment["index"] = index
    return fragment
