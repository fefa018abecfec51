"""Response objects and output items, shared by the whole-reply and the streamed translation.

One builder per object keeps the non-stream body and the stream's final ``response.completed``
identical, which is what clients that switch between the two rely on.
"""

from __future__ import annotations

from typing import Any

from switchyard.dialects._chat import ChatUsage
from switchyard.dialects.responses.request import ResponsesContext

# chat finish_reason -> Response incomplete_details.reason; any other reason completes.
INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}
# ApiError status -> Response error.code (the API documents a closed list of codes).
_ERROR_CODES = {429: "rate_limit_exceeded", 400: "invalid_prompt"}


def response_object(
    context: ResponsesContext,
    *,
    response_id: str,
    created_at: int,
    model: str | None,
    status: str,
    output: list[dict[str, Any]],
    usage: ChatUsage | None = None,
    finish_reason: str | None = None,
    error: dict[str, Any] | None = None,
    completed_at: int | None = None,
) -> dict[str, Any]:
    """A Response object (``object: "response"``) with the request's fields echoed."""
    reason = INCOMPLETE.get(finish_reason or "")
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": False,
        "completed_at": completed_at,
        "error": error,
        "incomplete_details": {"reason": reason} if status == "incomplete" else None,
        "model": model or context.model,
        "output": output,
        "previous_response_id": None,
        "store": False,
        "truncation": "disabled",
        "usage": usage_object(usage) if usage is not None else None,
        **context.echo,
    }


def final_status(finish_reason: str | None) -> str:
    """``completed`` or ``incomplete`` for a chat finish_reason."""
    return "incomplete" if finish_reason in INCOMPLETE else "completed"


def usage_object(usage: ChatUsage) -> dict[str, Any]:
    counted = usage.triple()
    cache = {
        "cached_tokens": counted.cache_read_tokens,
        "cache_write_tokens": counted.cache_write_tokens,
    }
    return {
        "input_tokens": usage.prompt,
        "input_tokens_details": cache,
        "output_tokens": usage.completion,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning},
        "total_tokens": usage.total,
    }


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def refusal_part(text: str) -> dict[str, Any]:
    return {"type": "refusal", "refusal": text}


def message_item(item_id: str, status: str, content: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": content,
    }


def function_call_item(
    item_id: str, status: str, call_id: str, name: str, arguments: str
) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }


def custom_call_item(item_id: str, call_id: str, name: str, text: str) -> dict[str, Any]:
    """A ``custom_tool_call`` output item (it has no ``status``, as OpenAI's)."""
    return {
        "id": item_id,
        "type": "custom_tool_call",
        "call_id": call_id,
        "name": name,
        "input": text,
    }


def error_object(status: int, message: str) -> dict[str, Any]:
    """Response ``error``: ``code`` from the documented list, the rest as ``server_error``."""
    return {"code": _ERROR_CODES.get(status, "server_error"), "message": message}
