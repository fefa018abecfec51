"""``POST /v1/messages`` (Anthropic Messages) request -> a chat completions request.

``system`` becomes a leading system message and each message its chat equivalent (content
blocks, tool use and tool results: :mod:`._content`); custom tools become function tools,
``tool_choice`` auto/any/tool/none becomes auto/required/named/none, ``stop_sequences`` becomes
``stop``, ``max_tokens`` becomes ``max_completion_tokens`` (which the model-proxy renames back to
``max_tokens`` for servers that read only that: Ollama, vLLM...) and ``metadata.user_id`` ``user``.

Dropped, because chat has no equivalent: ``top_k``, ``thinking`` (only remembered, to show
the reasoning a model sends apart as ``thinking`` blocks; ``thinking`` and
``redacted_thinking`` blocks in history are dropped), ``output_config.effort`` and ``.task_budget``,
``cache_control`` marks, ``citations``, ``service_tier``, ``speed``, ``context_management`` (its
edits only trim what the model reads; the whole conversation is sent instead, as Anthropic does
below their trigger), ``fallbacks``, ``fallback_credit_token``, ``diagnostics`` and unknown
fields (``is_error`` on a tool result becomes an ``Error:`` opening its text). The beta's
``output_format`` is translated as ``output_config.format`` is. Refused with a 400 naming the
field: server tools (``tools[i].type`` such as ``web_search_20250305``), blocks or sources that
need Anthropic's own storage or servers (file ids, URL documents, ``server_tool_use``...), and
the fields only Anthropic's servers act on (:data:`NATIVE_FIELDS`: the MCP connector's
``mcp_servers``, a code execution ``container``, ``inference_geo``).
Which of the request's fields each chat field came from is noted only when asked
(:func:`chat_fields`, the translation run again when a provider's error must name the client's
own field: :mod:`switchyard.dialects.chat_fields`).
``max_tokens`` is required, as Anthropic requires it. A trailing assistant message (a
"prefill") is sent as history: chat providers answer after it rather than continuing it (an
empty one is left out, as is any assistant turn with nothing a chat model reads).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from switchyard.dialects._common import (
    Body,
    decode_object,
    expect_bool,
    expect_int,
    expect_list,
    expect_number,
    expect_obj,
    expect_str,
    invalid,
    require,
    text_content,
    unsupported,
    unsupported_value,
)
from switchyard.dialects._tool_runs import keep_tool_runs_whole
from switchyard.dialects.anthropic._content import chat_messages, system_texts
from switchyard.dialects.chat_fields import ChatFields

_TOOL_CHOICE = {"auto": "auto", "any": "required", "none": "none"}
# Top-level fields only Anthropic's servers act on, and what each asks of them: refused when
# given (any value but null or empty), naming the field (``native_only`` lists the same names).
NATIVE_FIELDS = {
    "mcp_servers": "connects the model to remote MCP servers from Anthropic's servers "
    "(the MCP connector)",
    "container": "names a code execution container kept at Anthropic",
    "inference_geo": "asks Anthropic to run the model in a given region",
}
# The request's own fields behind a translated request's top-level fields (its messages, tools
# and their parts are noted as they are made): what a provider's error ``param`` is told as.
TOP_FIELDS = {
    **{field: field for field in ("model", "messages", "temperature", "top_p", "stream", "tools")},
    "max_completion_tokens": "max_tokens",
    "max_tokens": "max_tokens",  # as the model-proxy renames it back for some servers
    "stop": "stop_sequences",
    "user": "metadata.user_id",
    "tool_choice": "tool_choice",
    "tool_choice.type": "tool_choice.type",
    "tool_choice.function.name": "tool_choice.name",
    "parallel_tool_calls": "tool_choice.disable_parallel_tool_use",
}


class MessagesContext(msgspec.Struct, frozen=True, kw_only=True):
    """What turning a chat reply into an Anthropic Message needs from the request.

    Attributes:
        model: the model the client asked for (reported when the upstream names none).
        stop_sequences: the request's stop sequences, to report which one ended the answer when
            the upstream says so.
        thinking: the request enabled ``thinking``: the model's reasoning, when the upstream
            sends it apart from the answer, is shown as ``thinking`` blocks.
    """

    model: str
    stop_sequences: tuple[str, ...] = ()
    thinking: bool = False


class MessagesRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A translated request: the chat body, the reply context and the stream flag."""

    chat: dict[str, Any]
    context: MessagesContext
    stream: bool


def chat_fields(body: Body) -> ChatFields:
    """Which of ``body``'s fields each field of its chat request came from: the translation
    run again, noting (it is deterministic; only a provider's error naming a field needs it).

    Raises:
        InvalidRequest: as :func:`to_chat` does.
    """
    fields = ChatFields()
    to_chat(body, fields)
    return fields


def to_chat(body: Body, fields: ChatFields | None = None) -> MessagesRequest:
    """Translate an Anthropic Messages request into a chat completions request.

    Args:
        body: the request body, as bytes or an already decoded mapping.
        fields: noted where each chat field came from (:func:`chat_fields`); None, nothing is
            noted (a translation that succeeds costs no more than the chat request).

    Raises:
        InvalidRequest: the body is malformed or asks for something chat cannot express;
            ``param`` names the field (render it with :func:`..errors.error_body`).
    """
    req = decode_object(body)
    model = expect_str(require(req, "model", ""), "model")
    max_tokens = expect_int(require(req, "max_tokens", ""), "max_tokens")
    raw_messages = expect_list(require(req, "messages", ""), "messages")
    stream = expect_bool(req.get("stream") or False, "stream")
    for field, why in NATIVE_FIELDS.items():
        if req.get(field):
            raise unsupported(
                field,
                f"`{field}` is not supported for this model: it {why}, which needs a deployment "
                "that speaks Anthropic's Messages API natively",
            )

    messages: list[dict[str, Any]] = []
    system = req.get("system")
    if system is not None:
        texts = system_texts(system, "system")
        if texts:
            messages.append({"role": "system", "content": text_content(texts)})
            if fields is not None:
                fields.note(messages[-1], {"": "system", "content": "system"})
                fields.parts(messages[-1]["content"], [f"system[{j}]" for j in range(len(texts))])
    messages += keep_tool_runs_whole(chat_messages(raw_messages, "messages", fields))
    if not raw_messages:
        raise invalid("messages", "messages: at least one message is required")

    chat: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "max_completion_tokens": max_tokens,
    }
    stops: tuple[str, ...] = ()
    if req.get("stop_sequences") is not None:
        raw_stops = expect_list(req["stop_sequences"], "stop_sequences")
        stops = tuple(expect_str(s, f"stop_sequences[{i}]") for i, s in enumerate(raw_stops))
        if stops:
            chat["stop"] = list(stops)
    for field in ("temperature", "top_p"):
        if req.get(field) is not None:
            chat[field] = expect_number(req[field], field)
    metadata = req.get("metadata")
    if metadata is not None:
        user = expect_obj(metadata, "metadata").get("user_id")
        if user is not None:
            chat["user"] = expect_str(user, "metadata.user_id")
    tools = _tools(req.get("tools"), fields)
    if tools:
        chat["tools"] = tools
    if req.get("tool_choice") is not None:
        _tool_choice(expect_obj(req["tool_choice"], "tool_choice"), chat, bool(tools))
    formatted = _response_format(req, chat)
    if stream:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    if fields is not None:
        fields.request(chat, TOP_FIELDS | _format_fields(formatted))
    context = MessagesContext(model=model, stop_sequences=stops, thinking=_thinking(req))
    return MessagesRequest(chat=chat, context=context, stream=stream)


def _thinking(req: Mapping[str, Any]) -> bool:
    thinking = req.get("thinking")
    if thinking is None:
        return False
    return expect_obj(thinking, "thinking").get("type") in ("enabled", "adaptive")


def _tools(raw: Any, fields: ChatFields | None) -> list[dict[str, Any]]:
    if raw is None:
        return []
    tools = []
    for i, item in enumerate(expect_list(raw, "tools")):
        path = f"tools[{i}]"
        tool = expect_obj(item, path)
        kind = tool.get("type")
        if kind not in (None, "custom"):
            raise unsupported_value(
                f"{path}.type",
                f"tool type `{kind}` is not supported for this model: only custom tools "
                "(name, input_schema) can be translated; Anthropic's server tools run at "
                "Anthropic, and its client tools (bash, text editor...) run in your client but "
                "take an input schema only Anthropic's models know: declare such a tool as a "
                "custom tool with its input_schema to use it here",
            )
        function: dict[str, Any] = {
            "name": expect_str(require(tool, "name", path), f"{path}.name"),
            "parameters": dict(
                expect_obj(require(tool, "input_schema", path), f"{path}.input_schema")
            ),
        }
        if tool.get("description") is not None:
            function["description"] = expect_str(tool["description"], f"{path}.description")
        if tool.get("strict") is True:
            function["strict"] = True
        tools.append({"type": "function", "function": function})
        if fields is not None:
            notes = {f"function.{f}": f"{path}.{f}" for f in ("name", "description", "strict")}
            notes |= {"function.parameters": f"{path}.input_schema"}
            fields.note(tools[-1], {"": path, "type": f"{path}.type", "function": path, **notes})
    return tools


def _response_format(req: Mapping[str, Any], chat: dict[str, Any]) -> str:
    """The format asked for, as chat's ``response_format``; returns the field it came from
    ("" when none was asked for)."""
    path = ""
    if req.get("output_format") is not None:  # the beta's older spelling of output_config.format
        path = "output_format"
        chat["response_format"] = _format(expect_obj(req[path], path), path)
    output_config = req.get("output_config")
    if output_config is not None:
        fmt = expect_obj(output_config, "output_config").get("format")
        if fmt is not None:
            path = "output_config.format"
            chat["response_format"] = _format(expect_obj(fmt, path), path)
    return path


def _format_fields(path: str) -> dict[str, str]:
    """Where the fields of chat's ``response_format`` came from (``path``: the format's)."""
    if not path:
        return {}
    schema = "response_format.json_schema"
    return {
        "response_format": path,
        "response_format.type": f"{path}.type",
        f"{schema}.schema": f"{path}.schema",
        schema: path,
    }


def _tool_choice(choice: Mapping[str, Any], chat: dict[str, Any], has_tools: bool) -> None:
    kind = choice.get("type")
    translated: Any
    if kind == "tool":
        name = expect_str(require(choice, "name", "tool_choice"), "tool_choice.name")
        translated = {"type": "function", "function": {"name": name}}
    elif isinstance(kind, str) and kind in _TOOL_CHOICE:
        translated = _TOOL_CHOICE[kind]
    else:
        raise invalid("tool_choice.type", "tool_choice.type: must be auto, any, tool or none")
    if not has_tools:  # OpenAI's chat refuses tool_choice and parallel_tool_calls without tools
        return
    chat["tool_choice"] = translated
    if choice.get("disable_parallel_tool_use") is not None:
        disabled = expect_bool(
            choice["disable_parallel_tool_use"], "tool_choice.disable_parallel_tool_use"
        )
        chat["parallel_tool_calls"] = not disabled


def _format(fmt: Mapping[str, Any], path: str) -> dict[str, Any]:
    if fmt.get("type") != "json_schema":
        raise unsupported_value(f"{path}.type", "only json_schema is supported")
    schema = expect_obj(require(fmt, "schema", path), f"{path}.schema")
    return {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": dict(schema), "strict": True},
    }
