"""Thinking blocks a translating deployment made, kept out of Anthropic's own requests.

A deployment that translates Messages to chat answers a provider's reasoning as ``thinking``
blocks with an empty ``signature`` (Anthropic signs its own; nobody else can). A client sends
them back next turn, and on a route that also has a native ``anthropic`` deployment that turn
may go there, which refuses a thinking block it did not sign (a 400 mid-conversation). Such
blocks are dropped from what is relayed to Anthropic: they carry nothing Anthropic could use.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def unsigned_thinking_dropped(body: Mapping[str, Any]) -> Mapping[str, Any]:
    """``body`` without assistant ``thinking`` blocks whose ``signature`` is empty or absent
    (``body`` itself when it has none: the usual case costs one look per message)."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return body
    kept: list[Any] | None = None
    for i, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list) or message.get("role") != "assistant":
            if kept is not None:
                kept.append(message)
            continue
        blocks = [b for b in content if not _unsigned(b)]
        if len(blocks) == len(content):
            if kept is not None:
                kept.append(message)
            continue
        if kept is None:
            kept = list(messages[:i])
        kept.append({**message, "content": blocks})
    return body if kept is None else {**body, "messages": kept}


def _unsigned(block: Any) -> bool:
    return (
        isinstance(block, dict) and block.get("type") == "thinking" and not block.get("signature")
    )
