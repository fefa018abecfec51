"""``POST /v1/responses`` request -> a chat completions request.

Providers without a native Responses API get the same conversation as a chat request: the
instructions become a leading system message, input items become chat messages (function and
custom tool calls and their outputs become assistant ``tool_calls`` and ``tool`` messages), flat
function tools become chat's nested ones, and custom tools (free-text input, such as Codex's
``apply_patch``) functions taking one string (:mod:`._custom`). What the reply translation
needs from the request (the model, the fields a Response object echoes, the custom tools'
names) travels as a :class:`ResponsesContext`. Which of the request's fields each chat field
came from is noted only when asked (:func:`chat_fields`, the translation run again when a
provider's error must name the client's own field: :mod:`switchyard.dialects.chat_fields`).

Switchyard stores no responses, so every feature that reads a stored response or prompt is
refused with a 400 naming the field: ``previous_response_id``, ``conversation``, ``prompt``
(stored prompt templates) and ``background: true``. It keeps the output items of translated
answers (unless ``store: false``), and the model-proxy fills ``item_reference`` input items in
from them before calling this (:mod:`.references`); the echoed Response says ``store: true``
only where they were kept. Built-in tools (web search, file search, code interpreter,
MCP...) run inside OpenAI and cannot be offered by a chat provider, so they are refused naming
``tools[i].type`` (custom tools run in the client, like function tools, and are translated).
So are ``moderation`` (OpenAI's moderation of the input and output, which
may block the answer) and ``include`` asking for ``message.output_text.logprobs`` (a
translated answer carries none).

``max_output_tokens`` becomes ``max_completion_tokens`` (the model-proxy renames it
``max_tokens`` for servers that read only that: Ollama, vLLM...). Fields chat understands are
carried over (``temperature``, ``top_p``, ``user``,
``service_tier``, ``prompt_cache_key``, ``safety_identifier``, ``text.verbosity``,
``reasoning.effort``); the rest are dropped: ``metadata`` (echoed), ``include``'s other values
(built-in tools' outputs, input image URLs, ``reasoning.encrypted_content``: the answer has no
such items), ``truncation`` (the echo says ``disabled``; an input too long for the model gets
the provider's error), ``top_logprobs`` (OpenAI returns none without the include),
``max_tool_calls`` (built-in tools only), ``context_management`` (compaction only trims what the
model reads), ``prompt_cache_options``, ``prompt_cache_retention``, ``stream_options``,
``reasoning.summary``; unknown fields are ignored. Reasoning items a stateless client sends back
are dropped: chat providers cannot take them as input.
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
    unsupported,
    unsupported_value,
)
from switchyard.dialects._tool_runs import keep_tool_runs_whole
from switchyard.dialects.chat_fields import ChatFields
from switchyard.dialects.responses import _custom
from switchyard.dialects.responses._input import STATELESS_HINT, Input

_STATEFUL = {
    "previous_response_id": "continues a stored response",
    "conversation": "reads and writes a stored conversation",
    "prompt": "refers to a stored prompt template",
}
# Top-level fields only OpenAI's servers act on: refused when given (any value but null or
# empty), naming the field (``native_only`` lists the same names).
NATIVE_FIELDS = {"moderation": "runs OpenAI's moderation on the input and output"}
# The one ``include`` value a translated answer would silently leave out.
LOGPROBS = "message.output_text.logprobs"
_PASSED = ("temperature", "top_p")
_PASSED_STR = ("user", "service_tier", "prompt_cache_key", "safety_identifier")
_TOOL_CHOICE_MODES = frozenset({"none", "auto", "required"})
_CALLABLE = frozenset({"function", "custom"})  # the tool types chat can call (as functions)
_NATIVE_HINT = "it needs a deployment that speaks the OpenAI Responses API natively"
_SCHEMA = "response_format.json_schema"
# The request's own fields behind a translated request's top-level fields (its messages, tools
# and their parts are noted as they are made): what a provider's error ``param`` is told as.
TOP_FIELDS = {
    **{field: field for field in (*_PASSED, *_PASSED_STR, "model", "stream", "tools")},
    "parallel_tool_calls": "parallel_tool_calls",
    "messages": "input",
    "max_completion_tokens": "max_output_tokens",
    "max_tokens": "max_output_tokens",  # as the model-proxy renames it for some servers
    "tool_choice": "tool_choice",
    "tool_choice.type": "tool_choice.type",
    "tool_choice.function.name": "tool_choice.name",
    "tool_choice.allowed_tools.mode": "tool_choice.mode",
    "tool_choice.allowed_tools.tools": "tool_choice.tools",
    "response_format": "text.format",
    "response_format.type": "text.format.type",
    **{f"{_SCHEMA}.{f}": f"text.format.{f}" for f in ("name", "schema", "description", "strict")},
    "verbosity": "text.verbosity",
    "reasoning_effort": "reasoning.effort",
}


class ResponsesContext(msgspec.Struct, frozen=True, kw_only=True):
    """What turning a chat reply into a Response needs from the request.

    Attributes:
        model: the model the client asked for (reported when the upstream names none).
        custom: the names of the request's custom tools: a chat call to one of them is
            answered as a ``custom_tool_call``.
        echo: the request fields a Response object repeats back (instructions, tools,
            tool_choice, temperature...), already in Response form.
    """

    model: str
    echo: dict[str, Any]
    custom: frozenset[str] = frozenset()  # names of custom tools, called with free text


class ResponsesRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A translated request.

    Attributes:
        chat: the chat completions request body (a dict, ready to encode).
        context: what the reply translation needs.
        stream: whether the client asked for an event stream.
    """

    chat: dict[str, Any]
    context: ResponsesContext
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


def to_chat(body: Body, fields: ChatFields | None = None) -> ResponsesRequest:
    """Translate a Responses request into a chat completions request.

    Args:
        body: the request body, as bytes or an already decoded mapping.
        fields: noted where each chat field came from (:func:`chat_fields`); None, nothing is
            noted (a translation that succeeds costs no more than the chat request).

    Raises:
        InvalidRequest: the body is malformed, or asks for something a stateless gateway in front
            of a chat provider cannot do; ``param`` names the field.
    """
    req = decode_object(body)
    model = expect_str(require(req, "model", ""), "model")
    if not model:
        raise invalid("model", "model: must not be empty")
    for field, why in _STATEFUL.items():
        if req.get(field) is not None:
            raise unsupported(field, f"`{field}` {why}; {STATELESS_HINT}.")
    for field, why in NATIVE_FIELDS.items():
        if req.get(field):
            raise unsupported(field, f"`{field}` {why}; {_NATIVE_HINT}.")
    include = req.get("include")
    if isinstance(include, list) and LOGPROBS in include:
        raise unsupported_value(
            "include",
            f"`include` `{LOGPROBS}` is not supported for this model: translated answers carry "
            f"no log probabilities; {_NATIVE_HINT}.",
        )
    if req.get("background"):
        raise unsupported(
            "background",
            "`background: true` needs responses stored by the server; "
            "Switchyard stores no responses: use `stream: true` for long answers.",
        )
    stream = expect_bool(req.get("stream") or False, "stream")

    messages: list[dict[str, Any]] = []
    instructions = req.get("instructions")
    if instructions is not None:
        instructions = expect_str(instructions, "instructions")
        if instructions:
            messages.append({"role": "system", "content": instructions})
            if fields is not None:
                fields.note(messages[-1], {"": "instructions", "content": "instructions"})
    raw_input = require(req, "input", "")
    if isinstance(raw_input, str):
        messages.append({"role": "user", "content": raw_input})
        if fields is not None:
            fields.note(messages[-1], {"": "input", "content": "input"})
    else:
        Input(messages, fields).items(expect_list(raw_input, "input"))
        messages = keep_tool_runs_whole(messages)
    if not messages:
        raise invalid("input", "input: must contain at least one message")

    chat: dict[str, Any] = {"model": model, "messages": messages}
    echo: dict[str, Any] = {"instructions": instructions}
    if fields is not None:
        fields.request(chat, TOP_FIELDS)
    custom = _tooling(req, chat, echo, fields)
    _sampling(req, chat, echo)
    echo["text"] = _text(req.get("text"), chat)
    echo["reasoning"] = _reasoning(req.get("reasoning"), chat)
    metadata = req.get("metadata")
    echo["metadata"] = dict(expect_obj(metadata, "metadata")) if metadata is not None else {}
    if stream:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    context = ResponsesContext(model=model, echo=echo, custom=custom)
    return ResponsesRequest(chat=chat, context=context, stream=stream)


def _tooling(
    req: Mapping[str, Any],
    chat: dict[str, Any],
    echo: dict[str, Any],
    fields: ChatFields | None,
) -> frozenset[str]:
    """Tools and the settings about them; returns the names of the custom tools."""
    tools, echoed, custom = _tools(req.get("tools"))
    if fields is not None:
        for i, tool in enumerate(tools):
            fields.note(tool, _tool_fields(f"tools[{i}]", tool["function"]["name"] in custom))
    if tools:
        chat["tools"] = tools
    echo["tools"] = echoed
    choice = req.get("tool_choice")
    if choice is not None:
        translated = _tool_choice(choice)
        if tools:  # OpenAI's chat refuses tool_choice on a request without tools
            chat["tool_choice"] = translated
    echo["tool_choice"] = choice if choice is not None else "auto"
    parallel = req.get("parallel_tool_calls")
    if parallel is not None:
        parallel = expect_bool(parallel, "parallel_tool_calls")
        if tools:  # likewise parallel_tool_calls
            chat["parallel_tool_calls"] = parallel
    echo["parallel_tool_calls"] = True if parallel is None else parallel
    return custom


def _sampling(req: Mapping[str, Any], chat: dict[str, Any], echo: dict[str, Any]) -> None:
    max_out = req.get("max_output_tokens")
    if max_out is not None:
        chat["max_completion_tokens"] = expect_int(max_out, "max_output_tokens")
    echo["max_output_tokens"] = max_out
    for field in _PASSED:
        value = req.get(field)
        if value is not None:
            chat[field] = expect_number(value, field)
        echo[field] = value
    for field in _PASSED_STR:
        value = req.get(field)
        if value is not None:
            chat[field] = expect_str(value, field)
    echo["user"] = req.get("user")


def _tools(raw: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]], frozenset[str]]:
    """Chat's tools, the Response's echo of them, and the names of the custom tools."""
    if raw is None:
        return [], [], frozenset()
    tools: list[dict[str, Any]] = []
    echoed: list[dict[str, Any]] = []
    custom: set[str] = set()
    for i, item in enumerate(expect_list(raw, "tools")):
        path = f"tools[{i}]"
        tool = expect_obj(item, path)
        kind = tool.get("type")
        if kind == "custom":
            translated, echo = _custom.function_tool(tool, path)
            tools.append(translated)
            echoed.append(echo)
            custom.add(echo["name"])
            continue
        if kind != "function":
            raise unsupported_value(
                f"{path}.type",
                f"tool type `{kind}` is not supported for this model: built-in tools run "
                "inside OpenAI; only `function` and `custom` tools can be translated",
            )
        function: dict[str, Any] = {"name": expect_str(require(tool, "name", path), f"{path}.name")}
        if tool.get("description") is not None:
            function["description"] = expect_str(tool["description"], f"{path}.description")
        if tool.get("parameters") is not None:
            function["parameters"] = dict(expect_obj(tool["parameters"], f"{path}.parameters"))
        if tool.get("strict") is True:
            function["strict"] = True
        tools.append({"type": "function", "function": function})
        echoed.append(
            {
                "type": "function",
                "name": function["name"],
                "description": function.get("description"),
                "parameters": function.get("parameters"),
                "strict": function.get("strict", False),
            }
        )
    return tools, echoed, frozenset(custom)


def _tool_fields(path: str, custom: bool) -> dict[str, str]:
    """Where a chat tool's fields came from: a custom tool's parameters are Switchyard's own
    (one string), so they name the tool."""
    fields = {"": path, "type": f"{path}.type", "function": path}
    named = ("name", "description") if custom else ("name", "description", "parameters", "strict")
    return fields | {f"function.{field}": f"{path}.{field}" for field in named}


def _tool_choice(raw: Any) -> Any:
    if isinstance(raw, str):
        if raw not in _TOOL_CHOICE_MODES:
            raise invalid("tool_choice", "tool_choice: must be none, auto or required")
        return raw
    choice = expect_obj(raw, "tool_choice")
    kind = choice.get("type")
    if kind in _CALLABLE:
        name = expect_str(require(choice, "name", "tool_choice"), "tool_choice.name")
        return {"type": "function", "function": {"name": name}}
    if kind == "allowed_tools":
        mode = choice.get("mode")
        if mode not in ("auto", "required"):
            raise invalid("tool_choice.mode", "tool_choice.mode: must be auto or required")
        allowed = []
        for i, item in enumerate(
            expect_list(require(choice, "tools", "tool_choice"), "tool_choice.tools")
        ):
            path = f"tool_choice.tools[{i}]"
            tool = expect_obj(item, path)
            if tool.get("type") not in _CALLABLE:
                raise unsupported_value(
                    f"{path}.type", "only function and custom tools can be allowed"
                )
            name = expect_str(require(tool, "name", path), f"{path}.name")
            allowed.append({"type": "function", "function": {"name": name}})
        return {"type": "allowed_tools", "allowed_tools": {"mode": mode, "tools": allowed}}
    raise unsupported_value(
        "tool_choice.type", f"tool_choice type `{kind}` is not supported for this model"
    )


def _text(raw: Any, chat: dict[str, Any]) -> dict[str, Any]:
    """``text`` -> chat ``response_format`` / ``verbosity``; returns the Response echo."""
    if raw is None:
        return {"format": {"type": "text"}}
    text = expect_obj(raw, "text")
    echo: dict[str, Any] = {"format": {"type": "text"}}
    fmt = text.get("format")
    if fmt is not None:
        fmt = expect_obj(fmt, "text.format")
        kind = fmt.get("type")
        if kind == "json_schema":
            schema = expect_obj(require(fmt, "schema", "text.format"), "text.format.schema")
            spec: dict[str, Any] = {
                "name": expect_str(require(fmt, "name", "text.format"), "text.format.name"),
                "schema": dict(schema),
            }
            if fmt.get("description") is not None:
                spec["description"] = expect_str(fmt["description"], "text.format.description")
            if fmt.get("strict") is not None:
                spec["strict"] = expect_bool(fmt["strict"], "text.format.strict")
            chat["response_format"] = {"type": "json_schema", "json_schema": spec}
        elif kind == "json_object":
            chat["response_format"] = {"type": "json_object"}
        elif kind != "text":
            raise unsupported_value("text.format.type", f"text format `{kind}` is not supported")
        echo["format"] = dict(fmt)
    verbosity = text.get("verbosity")
    if verbosity is not None:
        chat["verbosity"] = expect_str(verbosity, "text.verbosity")
        echo["verbosity"] = verbosity
    return echo


def _reasoning(raw: Any, chat: dict[str, Any]) -> dict[str, Any] | None:
    if raw is None:
        return None
    reasoning = expect_obj(raw, "reasoning")
    effort = reasoning.get("effort")
    if effort is not None:
        chat["reasoning_effort"] = expect_str(effort, "reasoning.effort")
    return {"effort": effort, "summary": reasoning.get("summary")}
