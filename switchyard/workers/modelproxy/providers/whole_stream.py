"""A whole answer to a streamed request, streamed: for servers that do not stream.

Some OpenAI-compatible servers ignore ``"stream": true`` and answer with one JSON document.
Refused, every streamed request to them failed over (each after a provider call paid for and
thrown away, as a reviewer pointed out); passed on, an SDK waiting for events read none. The
answer is turned into the events a streaming server would have sent: one chunk per choice
holding the whole message as its delta (``role``, ``content``, ``tool_calls`` with their
``index``, ``refusal``), its ``logprobs`` and ``finish_reason``, then a chunk with the
``usage`` (sent on only to a client that asked for it, as for any stream). A legacy
completion's chunks have the answer's own shape (``text_completion``), so it goes as it came,
its usage apart.
"""

from __future__ import annotations

from typing import Any

import msgspec

_DELTA_FIELDS = ("role", "content", "refusal", "function_call", "audio")


def as_chunks(op: str, answer: Any) -> list[bytes]:
    """The stream's ``data:`` payloads for ``answer`` (a decoded chat completion or legacy
    completion); [] for anything else."""
    if not isinstance(answer, dict) or not isinstance(answer.get("choices"), list):
        return []
    head = {k: answer[k] for k in ("id", "created", "model", "system_fingerprint") if k in answer}
    usage = answer.get("usage")
    if op == "complete":
        body = {k: v for k, v in answer.items() if k != "usage"}
        chunks = [body]
    else:
        choices = [_chunk_choice(c) for c in answer["choices"] if isinstance(c, dict)]
        chunks = [{**head, "object": "chat.completion.chunk", "choices": choices}]
    if usage is not None:
        kind = "text_completion" if op == "complete" else "chat.completion.chunk"
        chunks.append({**head, "object": kind, "choices": [], "usage": usage})
    return [msgspec.json.encode(chunk) for chunk in chunks]


def _chunk_choice(choice: dict[str, Any]) -> dict[str, Any]:
    message = choice.get("message")
    message = message if isinstance(message, dict) else {}
    delta = {k: message[k] for k in _DELTA_FIELDS if message.get(k) is not None}
    calls = message.get("tool_calls")
    if isinstance(calls, list) and calls:
        delta["tool_calls"] = [
            {"index": i, **call} if isinstance(call, dict) else call for i, call in enumerate(calls)
        ]
    return {
        "index": choice.get("index", 0),
        "delta": delta,
        "logprobs": choice.get("logprobs"),
        "finish_reason": choice.get("finish_reason") or "stop",
    }
