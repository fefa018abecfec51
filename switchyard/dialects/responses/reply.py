"""A whole chat completion -> a Response object (``POST /v1/responses`` without streaming).

The assistant's text (and refusal) becomes one ``message`` output item, each tool call a
``function_call`` item after it (a ``custom_tool_call`` for a custom tool of the request), in
the order chat gave them. ``finish_reason: length`` makes
the Response ``incomplete`` with ``incomplete_details.reason: max_output_tokens``
(``content_filter`` likewise); anything else completes it.
"""

from __future__ import annotations

import time
from typing import Any

from switchyard.dialects import _chat
from switchyard.dialects._common import Body, encode, new_id
from switchyard.dialects.responses import _custom
from switchyard.dialects.responses import _objects as o
from switchyard.dialects.responses.request import ResponsesContext
from switchyard.schemas.openai import Usage


def to_response(
    chat: Body,
    context: ResponsesContext,
    *,
    response_id: str | None = None,
    created_at: int | None = None,
    estimate: Usage | None = None,
) -> bytes:
    """Translate a chat completion into an encoded Response object.

    Args:
        chat: the upstream chat completion, as bytes or a decoded dict.
        context: from :func:`~switchyard.dialects.responses.request.to_chat`.
        response_id: the Response id (``resp_...``); a fresh one when None.
        created_at: unix seconds; now when None.
        estimate: the usage to show when ``chat`` carries none (Switchyard's estimate, what
            the answer is billed); without either, ``usage`` is null.

    Raises:
        ProviderError: ``chat`` is not a chat completion.
    """
    return encode(
        response_dict(
            chat, context, response_id=response_id, created_at=created_at, estimate=estimate
        )
    )


def response_dict(
    chat: Body,
    context: ResponsesContext,
    *,
    response_id: str | None = None,
    created_at: int | None = None,
    estimate: Usage | None = None,
) -> dict[str, Any]:
    """:func:`to_response` before encoding (for callers that embed the object)."""
    completion = _chat.decode(chat)
    usage = completion.usage
    if usage is None and estimate is not None:
        usage = _chat.chat_usage(estimate)
    response_id = response_id or new_id("resp_")
    created = created_at if created_at is not None else int(time.time())
    choice = completion.first()
    finish = choice.finish_reason if choice is not None else None
    status = o.final_status(finish)
    item_status = "incomplete" if status == "incomplete" else "completed"
    suffix = response_id.removeprefix("resp_")
    output: list[dict[str, Any]] = []
    message = choice.message if choice is not None else None
    calls = (message.tool_calls or []) if message is not None else []
    text = message.text() if message is not None else ""
    content: list[dict[str, Any]] = []
    if text or not calls:
        content.append(o.text_part(text))
    if message is not None and message.refusal:
        if not text:
            content.clear()
        content.append(o.refusal_part(message.refusal))
    if content:
        output.append(o.message_item(f"msg_{suffix}", item_status, content))
    for call in calls:
        function = call.function or _chat.FunctionCall()
        name = function.name or ""
        if name in context.custom:
            output.append(
                o.custom_call_item(
                    f"ctc_{suffix}_{len(output)}",
                    call.id or new_id("call_"),
                    name,
                    _custom.input_of(function.arguments or ""),
                )
            )
            continue
        output.append(
            o.function_call_item(
                f"fc_{suffix}_{len(output)}",
                item_status,
                call.id or new_id("call_"),
                name,
                function.arguments or "",
            )
        )
    return o.response_object(
        context,
        response_id=response_id,
        created_at=created,
        model=completion.model,
        status=status,
        output=output,
        usage=usage,
        finish_reason=finish,
        completed_at=int(time.time()) if status == "completed" else None,
    )
