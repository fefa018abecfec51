"""Which Responses and Messages requests only a provider speaking the dialect can serve.

A Responses or Messages request goes through unchanged to a provider that speaks its dialect
(:data:`NATIVE`) and is translated to chat completions for any other. The translations refuse,
with a 400 naming the field, what only the dialect's own servers can do: Responses'
``previous_response_id``, ``conversation`` and ``prompt`` (stored state), ``moderation``,
``include`` asking for ``message.output_text.logprobs``, built-in tools and the items and
``tool_choice`` that name them (function and custom tools run in the client and are
translated), files by id or URL; Messages' ``mcp_servers`` (the MCP
connector), ``container`` and ``inference_geo``, server tools (``web_search_20250305``...), the
blocks their answers leave in history (``server_tool_use``, ``web_search_tool_result``...),
images and documents by file id or URL. Those refusals are true
only of the deployment, not of the request: the head asks :func:`needs_native` before it places
such a request on a translating deployment of a route that also has a native one, and skips
the translating ones when the answer is yes.

Only the shapes the translations refuse *because they translate* count here; a request that is
malformed for the provider too (an unknown ``tool_choice`` mode, a non-string ``type``) does not
(the translation's 400 is then the truth wherever it is served). The decode is narrow (types and
the few fields named above; the rest is skipped) and lenient: a body it cannot read is left to
the translation to refuse, so a wrong answer here is never worse than no check.
"""

from __future__ import annotations

from typing import Any

import msgspec

# Provider kinds that speak a dialect themselves: the model-proxy passes the request through
# (``workers.modelproxy.dialects`` reads this table too).
NATIVE = {"responses": frozenset({"openai"}), "messages": frozenset({"anthropic"})}
# The dialect of each operation that carries one (the token counts are translated too).
DIALECT_OF = {
    "responses": "responses",
    "input_tokens": "responses",
    "messages": "messages",
    "count_tokens": "messages",
}
# A count on a demo deployment is answered without any translation.
_COUNTS = frozenset({"input_tokens", "count_tokens"})

# Responses: what the translation carries.
_R_STATEFUL = ("previous_response_id", "conversation", "prompt")
_R_FIELDS = ("moderation",)  # refused when given (not null or empty), as in the translation
_R_LOGPROBS = "message.output_text.logprobs"  # the ``include`` value refused
_R_ITEMS = frozenset(
    {
        "message",
        "function_call",
        "function_call_output",
        "custom_tool_call",
        "custom_tool_call_output",
        "reasoning",
    }
)
_R_TOOLS = frozenset({"function", "custom"})  # client-side tools: chat functions when translated
_R_CHOICES = _R_TOOLS | {"allowed_tools"}
# Messages: what the translation carries.
_M_FIELDS = ("mcp_servers", "container", "inference_geo")  # as _R_FIELDS
_M_TOOLS = frozenset({"custom"})
_M_ASSISTANT = frozenset({"text", "tool_use", "thinking", "redacted_thinking"})
_M_USER = frozenset({"text", "image", "document", "tool_result"})
_M_IMAGE_SOURCES = frozenset({"base64", "url"})
_M_DOCUMENT_SOURCES = frozenset({"base64", "text"})


def serves(op: str, kind: str) -> bool:
    """Whether a provider of ``kind`` serves ``op`` without translating it (True for any
    operation that carries no dialect)."""
    dialect = DIALECT_OF.get(op)
    if dialect is None:
        return True
    return kind in NATIVE[dialect] or (op in _COUNTS and kind == "demo")


_ABSENT = msgspec.Raw(b"")  # a field the body does not have


class _Typed(msgspec.Struct, frozen=True):
    type: str | None = None


class _RTool(msgspec.Struct, frozen=True):
    type: str | None = None
    format: Any = None  # a custom tool's: as the translation reads it (responses/_custom.py)


class _RChoice(msgspec.Struct, frozen=True):
    type: str | None = None
    tools: list[_Typed] | None = None


class _RPart(msgspec.Struct, frozen=True):
    type: str | None = None
    file_id: str | None = None
    file_url: str | None = None


class _RItem(msgspec.Struct, frozen=True):
    type: str | None = None
    content: msgspec.Raw = _ABSENT
    output: msgspec.Raw = _ABSENT


class _Responses(msgspec.Struct, frozen=True):
    previous_response_id: msgspec.Raw = _ABSENT
    conversation: msgspec.Raw = _ABSENT
    prompt: msgspec.Raw = _ABSENT
    moderation: msgspec.Raw = _ABSENT
    include: msgspec.Raw = _ABSENT
    tools: list[_RTool] | None = None
    tool_choice: str | _RChoice | None = None
    input: str | list[_RItem] | None = None


class _MBlock(msgspec.Struct, frozen=True):
    type: str | None = None
    source: msgspec.Raw = _ABSENT
    content: msgspec.Raw = _ABSENT


class _MMessage(msgspec.Struct, frozen=True):
    role: str | None = None
    content: str | list[_MBlock] | None = None


class _Messages(msgspec.Struct, frozen=True):
    mcp_servers: msgspec.Raw = _ABSENT
    container: msgspec.Raw = _ABSENT
    inference_geo: msgspec.Raw = _ABSENT
    tools: list[_Typed] | None = None
    messages: list[_MMessage] | None = None


_RESPONSES = msgspec.json.Decoder(_Responses)
_MESSAGES = msgspec.json.Decoder(_Messages)
_R_PARTS = msgspec.json.Decoder(str | list[_RPart])
_M_BLOCKS = msgspec.json.Decoder(str | list[_MBlock])
_SOURCE = msgspec.json.Decoder(_Typed)
_ANY = msgspec.json.Decoder()
_NULL = b"null"


def needs_native(op: str, body: bytes) -> str:
    """What in ``body`` only a provider speaking ``op``'s dialect can serve (the field, for
    messages), or "" when a translating deployment can serve it too or the body is unreadable
    (then the translation answers for it)."""
    dialect = DIALECT_OF.get(op)
    try:
        if dialect == "responses":
            return _responses(_RESPONSES.decode(body))
        if dialect == "messages":
            return _messages(_MESSAGES.decode(body))
    except (msgspec.DecodeError, msgspec.ValidationError):
        pass
    return ""


def _set(raw: msgspec.Raw) -> bool:
    return bool(raw) and bytes(raw) != _NULL


def _value(raw: msgspec.Raw) -> object:
    """The field's JSON value (None when absent); read only for the few fields present."""
    return _ANY.decode(raw) if raw else None


def _given(req: _Responses | _Messages, fields: tuple[str, ...]) -> str:
    for field in fields:
        if _value(getattr(req, field)):  # as the translations' `if req.get(field)`
            return f"`{field}`"
    return ""


def _responses(req: _Responses) -> str:
    for field in _R_STATEFUL:
        if _set(getattr(req, field)):
            return f"`{field}`"
    found = _given(req, _R_FIELDS)
    if found:
        return found
    include = _value(req.include)
    if isinstance(include, list) and _R_LOGPROBS in include:
        return f"`include` `{_R_LOGPROBS}`"
    for i, tool in enumerate(req.tools or ()):
        if tool.type is not None and tool.type not in _R_TOOLS:
            return f"`tools[{i}].type` `{tool.type}`"
        if tool.type == "custom" and not _custom_translatable(tool.format):
            return f"`tools[{i}].format`"
    choice = req.tool_choice
    if isinstance(choice, _RChoice) and choice.type is not None:
        if choice.type not in _R_CHOICES:
            return f"`tool_choice.type` `{choice.type}`"
        if any(t.type is not None and t.type not in _R_TOOLS for t in choice.tools or ()):
            return "`tool_choice.tools`"
    if isinstance(req.input, list):
        for i, item in enumerate(req.input):
            found = _r_item(item, f"input[{i}]")
            if found:
                return found
    return ""


def _r_item(item: _RItem, path: str) -> str:
    if item.type is not None and item.type not in _R_ITEMS:
        return f"`{path}.type` `{item.type}`"
    for name, raw in (("content", item.content), ("output", item.output)):
        if not raw:
            continue
        try:
            parts = _R_PARTS.decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue
        if isinstance(parts, str):
            continue
        for j, part in enumerate(parts):
            if part.file_id is not None or part.file_url is not None:
                return f"`{path}.{name}[{j}]` (a file by id or URL)"
    return ""


def _messages(req: _Messages) -> str:
    found = _given(req, _M_FIELDS)
    if found:
        return found
    for i, tool in enumerate(req.tools or ()):
        if tool.type is not None and tool.type not in _M_TOOLS:
            return f"`tools[{i}].type` `{tool.type}`"
    for i, message in enumerate(req.messages or ()):
        if isinstance(message.content, str) or message.content is None:
            continue
        if message.role not in ("user", "assistant"):
            continue  # system turns take text blocks only, for Anthropic too
        known = _M_ASSISTANT if message.role == "assistant" else _M_USER
        for j, block in enumerate(message.content):
            found = _m_block(block, known, f"messages[{i}].content[{j}]")
            if found:
                return found
    return ""


def _m_block(block: _MBlock, known: frozenset[str], path: str) -> str:
    if block.type is not None and block.type not in known:
        return f"`{path}.type` `{block.type}`"
    if block.type in ("image", "document") and block.source:
        sources = _M_IMAGE_SOURCES if block.type == "image" else _M_DOCUMENT_SOURCES
        try:
            source = _SOURCE.decode(block.source).type
        except (msgspec.DecodeError, msgspec.ValidationError):
            return ""
        if source is not None and source not in sources:
            return f"`{path}.source.type` `{source}`"
    if block.type == "tool_result" and block.content:
        try:
            inner = _M_BLOCKS.decode(block.content)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return ""
        if isinstance(inner, list):
            for k, part in enumerate(inner):
                found = _m_block(part, _M_USER - {"tool_result"}, f"{path}.content[{k}]")
                if found:
                    return found
    return ""


def _custom_translatable(fmt: Any) -> bool:
    """Whether a custom tool's ``format`` is one the translation carries (text, or a lark or
    regex grammar): any other would be its 400 on a translating deployment."""
    if fmt is None:
        return True
    if not isinstance(fmt, dict):
        return True  # malformed: the translation's 400 names it wherever it goes
    kind = fmt.get("type")
    if kind == "text":
        return True
    return kind == "grammar" and fmt.get("syntax") in ("lark", "regex")
