"""Responses ``input`` items -> chat messages.

Chat wants an assistant turn's text and tool calls in one message, and every ``tool`` message
right after the assistant message that called it; Responses lists them as separate items.
Custom tool calls and their outputs are function calls and outputs to chat (the call's
``input`` becomes arguments ``{"input": ...}``). Images
or files inside a function call's output cannot ride in a ``tool`` message, so they are held back
and sent as a user message once the run of tool outputs ends. Reasoning items a stateless client
sends back are dropped (chat providers cannot take them). ``item_reference`` items are filled
in from the items kept of earlier answers before a request is translated
(:mod:`.references`); one still here was not, and is refused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from switchyard.dialects._common import (
    expect_list,
    expect_obj,
    expect_str,
    invalid,
    require,
    text_content,
    unsupported_value,
)
from switchyard.dialects.chat_fields import ChatFields
from switchyard.dialects.responses import _custom

# Tool outputs: each a ``tool`` message (custom tools are chat functions, see ``_custom``).
_OUTPUTS = frozenset({"function_call_output", "custom_tool_call_output"})
STATELESS_HINT = "Switchyard stores no responses: send the whole conversation in `input`"
_IMAGE_DETAIL = frozenset({"auto", "low", "high"})


class Input:
    """Walks ``input`` items into chat messages (see the module docstring)."""

    def __init__(self, messages: list[dict[str, Any]], fields: ChatFields | None) -> None:
        self.messages = messages
        self.fields = fields  # if any: told which item each message, part and call came from
        self.held: list[dict[str, Any]] = []  # media parts from tool outputs, for a user message

    def items(self, items: list[Any]) -> None:
        for i, raw in enumerate(items):
            path = f"input[{i}]"
            item = expect_obj(raw, path)
            kind = item.get("type")
            if kind not in _OUTPUTS:
                self._flush_held()
            if kind is None or kind == "message":
                self._message(item, path)
            elif kind == "function_call":
                self._function_call(item, path)
            elif kind == "custom_tool_call":
                self._custom_call(item, path)
            elif kind in _OUTPUTS:
                self._function_output(item, path)
            elif kind == "reasoning":
                continue  # chat providers cannot take reasoning items back as input
            elif kind == "item_reference":
                raise unsupported_value(
                    f"{path}.type",
                    "`item_reference` points at a stored item, and none is read where this "
                    "request is translated: send the item itself",
                )
            else:
                raise unsupported_value(
                    f"{path}.type",
                    f"input item type `{kind}` is not supported: only messages, function and "
                    "custom tool calls and their outputs can be translated for this model",
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
            self._append({"role": chat_role, "content": content}, path)
            return
        parts = _input_parts(
            expect_list(content, f"{path}.content"), f"{path}.content", self.fields
        )
        if chat_role == "system":
            texts = []
            for j, part in enumerate(parts):
                if part["type"] != "text":
                    raise unsupported_value(
                        f"{path}.content[{j}].type",
                        "system and developer messages can only carry text",
                    )
                texts.append(part["text"])
            self._append({"role": "system", "content": text_content(texts)}, path, parts)
            return
        if all(p["type"] == "text" for p in parts):
            texts = [p["text"] for p in parts]
            self._append({"role": "user", "content": text_content(texts)}, path, parts)
        else:
            self._append({"role": "user", "content": parts}, path)

    def _append(self, message: dict[str, Any], path: str, parts: Sequence[object] = ()) -> None:
        """``message``, translated from the message item at ``path`` (its text ``content``
        made of ``parts``: noted parts, or the paths of text parts)."""
        self.messages.append(message)
        if self.fields is not None:
            content = f"{path}.content"
            self.fields.note(
                message, {"": path, "role": f"{path}.role", "content": content, "refusal": content}
            )
            self.fields.parts(message["content"], parts)

    def _assistant(self, content: Any, path: str) -> None:
        message: dict[str, Any] = {"role": "assistant"}
        if isinstance(content, str):
            message["content"] = content
        else:
            texts: list[str] = []
            wrote: list[str] = []  # (noting) the paths of the text parts
            refusals: list[str] = []
            for j, raw in enumerate(expect_list(content, f"{path}.content")):
                ppath = f"{path}.content[{j}]"
                part = expect_obj(raw, ppath)
                kind = part.get("type")
                if kind in ("output_text", "input_text"):
                    texts.append(expect_str(require(part, "text", ppath), f"{ppath}.text"))
                    if self.fields is not None:
                        wrote.append(ppath)
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
            self._append(message, path, wrote)
            return
        self._append(message, path)

    def _function_call(self, item: Mapping[str, Any], path: str) -> None:
        arguments = expect_str(item.get("arguments") or "", f"{path}.arguments")
        self._call(item, path, arguments, f"{path}.arguments")

    def _custom_call(self, item: Mapping[str, Any], path: str) -> None:
        text = expect_str(require(item, "input", path), f"{path}.input")
        self._call(item, path, _custom.arguments(text), f"{path}.input")

    def _call(self, item: Mapping[str, Any], path: str, arguments: str, given: str) -> None:
        """The call at ``path`` (its arguments ``given`` in that field) as a chat tool call."""
        call = {
            "id": expect_str(require(item, "call_id", path), f"{path}.call_id"),
            "type": "function",
            "function": {
                "name": expect_str(require(item, "name", path), f"{path}.name"),
                "arguments": arguments,
            },
        }
        if self.fields is not None:
            self.fields.note(
                call,
                {
                    "": path,
                    "id": f"{path}.call_id",
                    "type": f"{path}.type",
                    "function": path,
                    "function.name": f"{path}.name",
                    "function.arguments": given,
                },
            )
        last = self.messages[-1] if self.messages else None
        if last is not None and last["role"] == "assistant":
            calls = last.setdefault("tool_calls", [])
            calls.append(call)
            if self.fields is not None:
                _noted_calls(self.fields, last, calls, path)
        else:
            self.messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
            if self.fields is not None:
                notes = {"": path, "role": path, "content": path, "tool_calls": path}
                self.fields.note(self.messages[-1], notes)

    def _function_output(self, item: Mapping[str, Any], path: str) -> None:
        call_id = expect_str(require(item, "call_id", path), f"{path}.call_id")
        output = require(item, "output", path)
        if isinstance(output, str):
            self.messages.append({"role": "tool", "tool_call_id": call_id, "content": output})
            self._noted_output(path)
            return
        parts = _input_parts(expect_list(output, f"{path}.output"), f"{path}.output", self.fields)
        texts = [p["text"] for p in parts if p["type"] == "text"]
        media = [p for p in parts if p["type"] != "text"]
        if media:
            self.held.extend(media)
            texts.append(f"[{len(media)} attachment(s) of this result follow in the next message]")
        content = text_content(texts) if texts else ""
        self.messages.append({"role": "tool", "tool_call_id": call_id, "content": content})
        self._noted_output(path, parts)

    def _noted_output(self, path: str, parts: Sequence[Mapping[str, Any]] = ()) -> None:
        """The last message noted as the tool output at ``path`` (its text made of the text
        ones of ``parts``), when noting."""
        if self.fields is not None:
            notes = {"tool_call_id": f"{path}.call_id", "content": f"{path}.output"}
            self.fields.note(self.messages[-1], {"": path, **notes})
            texts = [part for part in parts if part["type"] == "text"]
            self.fields.parts(self.messages[-1]["content"], texts)

    def _flush_held(self) -> None:
        if self.held:
            self.messages.append({"role": "user", "content": self.held})
            self.held = []


def _noted_calls(fields: ChatFields, message: dict[str, Any], calls: list[Any], path: str) -> None:
    """(noting) ``message``, of several items now that the call at ``path`` was appended
    to it as its last of ``calls``: its ``role`` and ``tool_calls`` are its one call's, or
    no one item's (``input``) once it holds more than one; so is its ``content`` when a
    call made the message."""
    notes = {**fields.noted(message), "": "input"}
    if len(calls) == 1:
        notes |= {"role": path, "tool_calls": path}
    else:
        if notes.get("content") == fields.field_of(calls[0], ""):
            notes["content"] = "input"
        notes |= {"role": "input", "tool_calls": "input"}
    fields.note(message, notes)


def _input_parts(parts: list[Any], path: str, fields: ChatFields | None) -> list[dict[str, Any]]:
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
            if fields is not None:
                notes = {"": ppath, "type": f"{ppath}.type", "text": f"{ppath}.text"}
                fields.note(out[-1], notes)
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
            if isinstance(detail, str) and detail in _IMAGE_DETAIL:
                image["detail"] = detail
            out.append({"type": "image_url", "image_url": image})
            if fields is not None:
                where = f"{ppath}.image_url"
                notes = {"": ppath, "type": f"{ppath}.type", "image_url": where}
                notes |= {"image_url.url": where, "image_url.detail": f"{ppath}.detail"}
                fields.note(out[-1], notes)
        elif kind == "input_file":
            out.append(_file_part(part, ppath))
            if fields is not None:
                data, name = f"{ppath}.file_data", f"{ppath}.filename"
                notes = {"": ppath, "type": f"{ppath}.type", "file": ppath}
                fields.note(out[-1], {**notes, "file.file_data": data, "file.filename": name})
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
