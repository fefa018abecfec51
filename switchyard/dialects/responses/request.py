"""``POST /v1/responses`` request -> a chat completions request.

Providers without a native Responses API get the same conversation as a chat request: the
instructions become a leading system message, input items become chat messages (function calls
and their outputs become assistant ``tool_calls`` and ``tool`` messages), flat function tools
become chat's nested ones. What the reply translation needs from the request (the model and the
fields a Response object echoes) travels as a :class:`ResponsesContext`.

Switchyard stores no responses, so every feature that reads server-side state is refused with a
400 naming the field: ``previous_response_id``, ``conversation``, ``prompt`` (stored prompt
templates), ``background: true`` and ``item_reference`` input items. ``store`` is accepted and
ignored: the client gets its answer, nothing is kept, and the echoed Response says ``store:
false``. Built-in tools (web search, file search, code interpreter, MCP...) run inside OpenAI and
cannot be offered by a chat provider, so they are refused naming ``tools[i].type``.

Fields chat understands are carried over (``temperature``, ``top_p``, ``user``,
``service_tier``, ``prompt_cache_key``, ``safety_identifier``, ``text.verbosity``,
``reasoning.effort``); the rest (``metadata``, ``include``, ``truncation``, ``top_logprobs``,
``max_tool_calls``, ``stream_options``, ``reasoning.summary``...) are dropped, and unknown fields
are ignored. Reasoning items a stateless client sends back are dropped: chat providers cannot
take them as input.
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

_STATEFUL = {
    "previous_response_id": "continues a stored response",
    "conversation": "reads and writes a stored conversation",
    "prompt": "refers to a stored prompt template",
}
_STATELESS_HINT = "Switchyard stores no responses: send the whole conversation in `input`"
_PASSED = ("temperature", "top_p")
_PASSED_STR = ("user", "service_tier", "prompt_cache_key", "safety_identifier")
_IMAGE_DETAIL = frozenset({"auto", "low", "high"})
_TOOL_CHOICE_MODES = frozenset({"none", "auto", "required"})


class ResponsesContext(msgspec.Struct, frozen=True, kw_only=True):
    """What turning a chat reply into a Response needs from the request.

    Attributes:
        model: the model the client asked for (reported when the upstream names none).
        echo: the request fields a Response object repeats back (instructions, tools,
            tool_choice, temperature...), already in Response form.
    """

    model: str
    echo: dict[str, Any]


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


def to_chat(body: Body) -> ResponsesRequest:
    """Translate a Responses request into a chat completions request.

    Args:
        body: the request body, as bytes or an already decoded mapping.

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
            raise unsupported(field, f"`{field}` {why}; {_STATELESS_HINT}.")
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
    raw_input = require(req, "input", "")
    if isinstance(raw_input, str):
        messages.append({"role": "user", "content": raw_input})
    else:
        _Input(messages).items(expect_list(raw_input, "input"))
    if not messages:
        raise invalid("input", "input: must contain at least one message")

    chat: dict[str, Any] = {"model": model, "messages": messages}
    echo: dict[str, Any] = {"instructions": instructions}
    _tooling(req, chat, echo)
    _sampling(req, chat, echo)
    echo["text"] = _text(req.get("text"), chat)
    echo["reasoning"] = _reasoning(req.get("reasoning"), chat)
    metadata = req.get("metadata")
    echo["metadata"] = dict(expect_obj(metadata, "metadata")) if metadata is not None else {}
    if stream:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return ResponsesRequest(
        chat=chat, context=ResponsesContext(model=model, echo=echo), stream=stream
    )


def _tooling(req: Mapping[str, Any], chat: dict[str, Any], echo: dict[str, Any]) -> None:
    tools = _tools(req.get("tools"))
    if tools:
        chat["tools"] = tools
    echo["tools"] = [_echo_tool(t) for t in tools]
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


class _Input:
    """Walks ``input`` items into chat messages, merging what chat keeps together.

    Chat wants an assistant turn's text and tool calls in one message, and every ``tool`` message
    right after the assistant message that called it. Images or files inside a function call's
    output cannot ride in a ``tool`` message, so they are held back and sent as a user message
    once the run of tool outputs ends.
    """

    def __init__(self, messages: list[dict[str, Any]]) -> None:
        self.messages = messages
        self.held: list[dict[str, Any]] = []  # media parts from tool outputs, for a user message

    def items(self, items: list[Any]) -> None:
        for i, raw in enumerate(items):
            path = f"input[{i}]"
            item = expect_obj(raw, path)
            kind = item.get("type")
            if kind != "function_call_output":
                self._flush_held()
            if kind is None or kind == "message":
                self._message(item, path)
            elif kind == "function_call":
                self._function_call(item, path)
            elif kind == "function_call_output":
                self._function_output(item, path)
            elif kind == "reasoning":
                continue  # chat providers cannot take reasoning items back as input
            elif kind == "item_reference":
                raise unsupported_value(
                    f"{path}.type", f"`item_reference` points at a stored item; {_STATELESS_HINT}."
                )
            else:
                raise unsupported_value(
                    f"{path}.type",
                    f"input item type `{kind}` is not supported: only messages, function calls "
                    "and function call outputs can be translated for this model",
                )
        self._flush_held()

    def _message(self, item: Mapping[str, Any], path: str) -> None:
        role = expect_str(require(item, "role", path), f"{path}.role")
        content = require(item, "content", path)
        if role == "assistant":
            self._assistant(content, path)
            return
        if role not in ("user", "system", "developer"):
            raise invalid(
                f"{path}.role",
                f"{path}.role: must be one of user, system, developer, assistant (got `{role}`)",
            )
        # Chat providers other than OpenAI do not know `developer`; OpenAI treats a system
        # message as developer instructions for the models that distinguish them.
        chat_role = "user" if role == "user" else "system"
        if isinstance(content, str):
            self.messages.append({"role": chat_role, "content": content})
            return
        parts = _input_parts(expect_list(content, f"{path}.content"), f"{path}.content")
        if chat_role == "system":
            texts = []
            for j, part in enumerate(parts):
                if part["type"] != "text":
                    raise unsupported_value(
                        f"{path}.content[{j}].type",
                        "system and developer messages can only carry text",
                    )
                texts.append(part["text"])
            self.messages.append({"role": "system", "content": text_content(texts)})
            return
        if all(p["type"] == "text" for p in parts):
            self.messages.append(
                {"role": "user", "content": text_content([p["text"] for p in parts])}
            )
        else:
            self.messages.append({"role": "user", "content": parts})

    def _assistant(self, content: Any, path: str) -> None:
        message: dict[str, Any] = {"role": "assistant"}
        if isinstance(content, str):
            message["content"] = content
        else:
            texts: list[str] = []
            refusals: list[str] = []
            for j, raw in enumerate(expect_list(content, f"{path}.content")):
                ppath = f"{path}.content[{j}]"
                part = expect_obj(raw, ppath)
                kind = part.get("type")
                if kind in ("output_text", "input_text"):
                    texts.append(expect_str(require(part, "text", ppath), f"{ppath}.text"))
                elif kind == "refusal":
                    refusals.append(expect_str(require(part, "refusal", ppath), f"{ppath}.refusal"))
                else:
                    raise unsupported_value(
                        f"{ppath}.type",
                        f"assistant content part type `{kind}` is not supported "
                        "(expected output_text or refusal)",
                    )
            message["content"] = text_content(texts) if texts else None
            if refusals:
                message["refusal"] = "\n".join(refusals)
        self.messages.append(message)

    def _function_call(self, item: Mapping[str, Any], path: str) -> None:
        call = {
            "id": expect_str(require(item, "call_id", path), f"{path}.call_id"),
            "type": "function",
            "function": {
                "name": expect_str(require(item, "name", path), f"{path}.name"),
                "arguments": expect_str(item.get("arguments") or "", f"{path}.arguments"),
            },
        }
        last = self.messages[-1] if self.messages else None
        if last is not None and last["role"] == "assistant":
            last.setdefault("tool_calls", []).append(call)
        else:
            self.messages.append({"role": "assistant", "content": None, "tool_calls": [call]})

    def _function_output(self, item: Mapping[str, Any], path: str) -> None:
        call_id = expect_str(require(item, "call_id", path), f"{path}.call_id")
        output = require(item, "output", path)
        if isinstance(output, str):
            self.messages.append({"role": "tool", "tool_call_id": call_id, "content": output})
            return
        parts = _input_parts(expect_list(output, f"{path}.output"), f"{path}.output")
        texts = [p["text"] for p in parts if p["type"] == "text"]
        media = [p for p in parts if p["type"] != "text"]
        if media:
            self.held.extend(media)
            texts.append(f"[{len(media)} attachment(s) of this result follow in the next message]")
        content = text_content(texts) if texts else ""
        self.messages.append({"role": "tool", "tool_call_id": call_id, "content": content})

    def _flush_held(self) -> None:
        if self.held:
            self.messages.append({"role": "user", "content": self.held})
            self.held = []


def _input_parts(parts: list[Any], path: str) -> list[dict[str, Any]]:
    """``input_text`` / ``input_image`` / ``input_file`` parts as chat content parts."""
    out: list[dict[str, Any]] = []
    for j, raw in enumerate(parts):
        ppath = f"{path}[{j}]"
        part = expect_obj(raw, ppath)
        kind = part.get("type")
        if kind in ("input_text", "output_text", "text"):
            out.append(
                {"type": "text", "text": expect_str(require(part, "text", ppath), f"{ppath}.text")}
            )
        elif kind == "input_image":
            if part.get("file_id") is not None:
                raise unsupported_value(
                    f"{ppath}.file_id",
                    "images by file id need OpenAI's file storage; send `image_url` "
                    "(an https URL or a data: URI) instead",
                )
            url = expect_str(require(part, "image_url", ppath), f"{ppath}.image_url")
            image: dict[str, Any] = {"url": url}
            detail = part.get("detail")
            if detail in _IMAGE_DETAIL:
                image["detail"] = detail
            out.append({"type": "image_url", "image_url": image})
        elif kind == "input_file":
            out.append(_file_part(part, ppath))
        else:
            raise unsupported_value(
                f"{ppath}.type",
                f"content part type `{kind}` is not supported "
                "(expected input_text, input_image or input_file)",
            )
    return out


def _file_part(part: Mapping[str, Any], path: str) -> dict[str, Any]:
    for field in ("file_id", "file_url"):
        if part.get(field) is not None:
            raise unsupported_value(
                f"{path}.{field}",
                f"files by `{field}` cannot be passed to this model; send `file_data` "
                "(a base64 data: URI) with a `filename` instead",
            )
    data = expect_str(require(part, "file_data", path), f"{path}.file_data")
    file: dict[str, Any] = {"file_data": data}
    if part.get("filename") is not None:
        file["filename"] = expect_str(part["filename"], f"{path}.filename")
    return {"type": "file", "file": file}


def _tools(raw: Any) -> list[dict[str, Any]]:
    if raw is None:
        return []
    tools: list[dict[str, Any]] = []
    for i, item in enumerate(expect_list(raw, "tools")):
        path = f"tools[{i}]"
        tool = expect_obj(item, path)
        kind = tool.get("type")
        if kind != "function":
            raise unsupported_value(
                f"{path}.type",
                f"tool type `{kind}` is not supported for this model: built-in tools run "
                "inside OpenAI; only `function` tools can be translated",
            )
        function: dict[str, Any] = {"name": expect_str(require(tool, "name", path), f"{path}.name")}
        if tool.get("description") is not None:
            function["description"] = expect_str(tool["description"], f"{path}.description")
        if tool.get("parameters") is not None:
            function["parameters"] = dict(expect_obj(tool["parameters"], f"{path}.parameters"))
        if tool.get("strict") is True:
            function["strict"] = True
        tools.append({"type": "function", "function": function})
    return tools


def _echo_tool(tool: dict[str, Any]) -> dict[str, Any]:
    f = tool["function"]
    return {
        "type": "function",
        "name": f["name"],
        "description": f.get("description"),
        "parameters": f.get("parameters"),
        "strict": f.get("strict", False),
    }


def _tool_choice(raw: Any) -> Any:
    if isinstance(raw, str):
        if raw not in _TOOL_CHOICE_MODES:
            raise invalid("tool_choice", "tool_choice: must be none, auto or required")
        return raw
    choice = expect_obj(raw, "tool_choice")
    kind = choice.get("type")
    if kind == "function":
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
            if tool.get("type") != "function":
                raise unsupported_value(f"{path}.type", "only function tools can be allowed")
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
