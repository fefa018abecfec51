"""A whole chat completion -> an Anthropic Message (``POST /v1/messages`` without streaming).

The model's reasoning, when the request enabled ``thinking`` and the server sends it apart
(``reasoning_content``, or ``reasoning``), becomes a leading ``thinking`` block with an empty
``signature``. Text becomes a ``text`` block, each tool call a ``tool_use`` block whose
``input`` is the parsed arguments. Anthropic's ``input`` is always an object: arguments that
are not one (JSON cut short by the output limit, an array, plain text) become
``{"_raw_arguments": "<the text>"}``, which the client's tool check refuses and the model reads
back next turn, where ``{}`` hid what went wrong (and a tool with no required parameter would
have run without arguments); no arguments, or ``null``, are ``{}``. ``finish_reason`` maps
to ``stop_reason``: stop -> end_turn (stop_sequence when the upstream names the stop string
that matched, as vLLM and SGLang do), length -> max_tokens, tool_calls -> tool_use,
content_filter -> refusal. Usage follows Anthropic's split: ``input_tokens`` excludes the
prompt tokens read from cache and written to it, which are ``cache_read_input_tokens`` and
``cache_creation_input_tokens``.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

from switchyard.dialects import _chat
from switchyard.dialects._common import Body, encode, new_id
from switchyard.dialects.anthropic.request import MessagesContext
from switchyard.schemas.openai import Usage

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
_ARGS = msgspec.json.Decoder()
_LENIENT = json.JSONDecoder()
RAW_ARGUMENTS = "_raw_arguments"  # the key under which arguments that are no object are kept


def stop_reason(
    finish_reason: str | None, matched: str | int | None, context: MessagesContext
) -> tuple[str, str | None]:
    """``(stop_reason, stop_sequence)`` for a chat finish_reason.

    ``matched`` is the stop string that ended the answer as the upstream names it (vLLM's
    ``stop_reason``, SGLang's ``matched_stop``); it counts only when it is one of the request's
    ``stop_sequences``.
    """
    if finish_reason == "stop" and isinstance(matched, str) and matched in context.stop_sequences:
        return "stop_sequence", matched
    return STOP_REASONS.get(finish_reason or "stop", "end_turn"), None


def usage_object(usage: _chat.ChatUsage | None) -> dict[str, Any]:
    if usage is None:
        return {"input_tokens": 0, "output_tokens": 0}
    counted = usage.triple()
    read, write = counted.cache_read_tokens, counted.cache_write_tokens
    return {
        "input_tokens": max(usage.prompt - read - write, 0),
        "output_tokens": usage.completion,
        "cache_creation_input_tokens": write,
        "cache_read_input_tokens": read,
    }


def tool_input(arguments: str | None) -> dict[str, Any]:
    """A tool call's arguments as the object Anthropic's ``input`` must be (whole answers and
    streams alike: the stream sends this object's JSON)."""
    if not arguments or not arguments.strip():
        return {}
    try:
        value = _ARGS.decode(arguments)
    except msgspec.DecodeError:
        # Trailing garbage after the object (a stray brace, seen from small models): the
        # object itself.
        try:
            value, _ = _LENIENT.raw_decode(arguments.strip())
        except ValueError:
            return {RAW_ARGUMENTS: arguments}
    if value is None:
        return {}
    if isinstance(value, str):  # the object JSON-encoded once more (a hermes-style parser)
        try:
            inner = _ARGS.decode(value)
        except msgspec.DecodeError:
            return {RAW_ARGUMENTS: arguments}
        return inner if isinstance(inner, dict) else {RAW_ARGUMENTS: arguments}
    return value if isinstance(value, dict) else {RAW_ARGUMENTS: arguments}


def to_message(
    chat: Body,
    context: MessagesContext,
    *,
    message_id: str | None = None,
    estimate: Usage | None = None,
) -> bytes:
    """Translate a chat completion into an encoded Anthropic Message.

    Args:
        chat: the upstream chat completion, as bytes or a decoded dict.
        context: from :func:`~switchyard.dialects.anthropic.request.to_chat`.
        message_id: the Message id (``msg_...``); a fresh one when None.
        estimate: the usage to show when ``chat`` carries none (Switchyard's estimate, what
            the answer is billed); without either, 0 and 0.

    Raises:
        ProviderError: ``chat`` is not a chat completion.
    """
    return encode(message_dict(chat, context, message_id=message_id, estimate=estimate))


def message_dict(
    chat: Body,
    context: MessagesContext,
    *,
    message_id: str | None = None,
    estimate: Usage | None = None,
) -> dict[str, Any]:
    """:func:`to_message` before encoding."""
    completion = _chat.decode(chat)
    usage = completion.usage
    if usage is None and estimate is not None:
        usage = _chat.chat_usage(estimate)
    choice = completion.first()
    message = choice.message if choice is not None else None
    content: list[dict[str, Any]] = []
    finish = choice.finish_reason if choice is not None else None
    if message is not None:
        thought = message.thought() if context.thinking else ""
        if thought:  # no signature: only Anthropic can sign, and the translation drops it
            content.append({"type": "thinking", "thinking": thought, "signature": ""})
        text = message.text()
        if text:
            content.append({"type": "text", "text": text})
        if message.refusal:  # the model declined: Anthropic's `refusal` stop reason
            content.append({"type": "text", "text": message.refusal})
            if finish in (None, "stop"):
                finish = "content_filter"
        if message.tool_calls and finish in (None, "stop"):
            finish = "tool_calls"  # some servers say "stop" after calling tools (Gemini's)
        for call in message.tool_calls or ():
            function = call.function or _chat.FunctionCall()
            content.append(
                {
                    "type": "tool_use",
                    "id": call.id or new_id("toolu_"),
                    "name": function.name or "",
                    "input": tool_input(function.arguments),
                }
            )
    reason, sequence = stop_reason(finish, choice.matched if choice is not None else None, context)
    return {
        "id": message_id or new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": completion.model or context.model,
        "content": content,
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": usage_object(usage),
    }
