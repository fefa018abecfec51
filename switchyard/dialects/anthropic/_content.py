"""Anthropic ``messages`` and ``system`` -> chat messages and content parts.

An assistant's ``tool_use`` blocks become its ``tool_calls``; a user's ``tool_result`` blocks
become ``tool`` messages placed right after the assistant message, before the rest of that user
turn, as chat requires; one marked ``is_error`` has its text opened with ``Error:``. Images in a
tool result cannot ride in a ``tool`` message, so they follow in the user message. Images become
``image_url`` parts (base64 sources as data: URIs), PDFs ``file`` parts, plain-text documents
text. ``thinking`` and ``redacted_thinking`` blocks are dropped; blocks that need Anthropic's
servers or storage are refused naming their ``type``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from switchyard.dialects._common import (
    encode,
    expect_list,
    expect_obj,
    expect_str,
    invalid,
    require,
    text_content,
    unsupported_value,
)

ERROR_MARK = "Error: "  # opens the text of a tool result marked ``is_error``
_DROPPED_BLOCKS = frozenset({"thinking", "redacted_thinking"})


def system_texts(system: Any, path: str) -> list[str]:
    if isinstance(system, str):
        return [system] if system else []
    texts = []
    for j, raw in enumerate(expect_list(system, path)):
        block = expect_obj(raw, f"{path}[{j}]")
        if block.get("type") != "text":
            raise unsupported_value(f"{path}[{j}].type", "system blocks must be text blocks")
        texts.append(expect_str(require(block, "text", f"{path}[{j}]"), f"{path}[{j}].text"))
    return texts


def append_message(msg: Mapping[str, Any], path: str, out: list[dict[str, Any]]) -> None:
    role = expect_str(require(msg, "role", path), f"{path}.role")
    content = require(msg, "content", path)
    if role == "system":  # newer API versions allow system turns inside `messages`
        texts = system_texts(content, f"{path}.content")
        out.append({"role": "system", "content": text_content(texts)})
        return
    if role not in ("user", "assistant"):
        raise invalid(
            f"{path}.role", f"{path}.role: must be user, assistant or system (got `{role}`)"
        )
    if isinstance(content, str):
        out.append({"role": role, "content": content})
        return
    blocks = expect_list(content, f"{path}.content")
    if not blocks and role == "user":  # Anthropic refuses it; translated, it vanished
        raise invalid(f"{path}.content", f"{path}.content: must not be empty")
    if role == "assistant":
        _assistant(blocks, f"{path}.content", out)
    else:
        _user(blocks, f"{path}.content", out)


def _assistant(blocks: list[Any], path: str, out: list[dict[str, Any]]) -> None:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, raw in enumerate(blocks):
        bpath = f"{path}[{j}]"
        block = expect_obj(raw, bpath)
        kind = block.get("type")
        if kind == "text":
            texts.append(expect_str(require(block, "text", bpath), f"{bpath}.text"))
        elif kind == "tool_use":
            arguments = expect_obj(require(block, "input", bpath), f"{bpath}.input")
            calls.append(
                {
                    "id": expect_str(require(block, "id", bpath), f"{bpath}.id"),
                    "type": "function",
                    "function": {
                        "name": expect_str(require(block, "name", bpath), f"{bpath}.name"),
                        "arguments": encode(arguments).decode(),
                    },
                }
            )
        elif not isinstance(kind, str):
            raise invalid(f"{bpath}.type", f"{bpath}.type: must be a string")
        elif kind not in _DROPPED_BLOCKS:
            raise unsupported_value(
                f"{bpath}.type",
                f"assistant content block type `{kind}` is not supported for this model",
            )
    message: dict[str, Any] = {
        "role": "assistant",
        "content": text_content(texts) if texts else None,
    }
    if calls:
        message["tool_calls"] = calls
    if texts or calls:
        out.append(message)


def _user(blocks: list[Any], path: str, out: list[dict[str, Any]]) -> None:
    parts: list[dict[str, Any]] = []
    held: list[dict[str, Any]] = []  # images from tool results, sent with the user turn
    for j, raw in enumerate(blocks):
        bpath = f"{path}[{j}]"
        block = expect_obj(raw, bpath)
        if block.get("type") == "tool_result":
            out.append(_tool_result(block, bpath, held))
        else:
            parts.append(_user_part(block, bpath))
    parts = held + parts
    if not parts:
        return
    if all(p["type"] == "text" for p in parts):
        out.append({"role": "user", "content": text_content([p["text"] for p in parts])})
    else:
        out.append({"role": "user", "content": parts})


def _tool_result(block: Mapping[str, Any], path: str, held: list[dict[str, Any]]) -> dict[str, Any]:
    call_id = expect_str(require(block, "tool_use_id", path), f"{path}.tool_use_id")
    content = block.get("content")
    # Chat has no flag for a failed tool call: the model would read the error as the tool's
    # answer. The text says so instead.
    failed = ERROR_MARK if block.get("is_error") is True else ""
    if content is None or isinstance(content, str):
        return {"role": "tool", "tool_call_id": call_id, "content": failed + (content or "")}
    texts: list[str] = []
    media = 0
    for k, raw in enumerate(expect_list(content, f"{path}.content")):
        part = _user_part(expect_obj(raw, f"{path}.content[{k}]"), f"{path}.content[{k}]")
        if part["type"] == "text":
            texts.append(part["text"])
        else:
            held.append(part)
            media += 1
    if failed:
        texts = [failed + texts[0], *texts[1:]] if texts else [failed.strip()]
    if media:
        texts.append(f"[{media} attachment(s) of this result follow in the next message]")
    return {
        "role": "tool",
        "tool_call_id": call_id,
        "content": text_content(texts) if texts else "",
    }


def _user_part(block: Mapping[str, Any], path: str) -> dict[str, Any]:
    kind = block.get("type")
    if kind == "text":
        return {"type": "text", "text": expect_str(require(block, "text", path), f"{path}.text")}
    if kind == "image":
        source = expect_obj(require(block, "source", path), f"{path}.source")
        return {"type": "image_url", "image_url": {"url": _image_url(source, f"{path}.source")}}
    if kind == "document":
        return _document(block, path)
    raise unsupported_value(
        f"{path}.type", f"content block type `{kind}` is not supported for this model"
    )


def _image_url(source: Mapping[str, Any], path: str) -> str:
    kind = source.get("type")
    if kind == "base64":
        media_type = expect_str(require(source, "media_type", path), f"{path}.media_type")
        data = expect_str(require(source, "data", path), f"{path}.data")
        return f"data:{media_type};base64,{data}"
    if kind == "url":
        return expect_str(require(source, "url", path), f"{path}.url")
    raise unsupported_value(
        f"{path}.type",
        f"image source `{kind}` is not supported for this model: send base64 data or a URL",
    )


def _document(block: Mapping[str, Any], path: str) -> dict[str, Any]:
    source = expect_obj(require(block, "source", path), f"{path}.source")
    kind = source.get("type")
    spath = f"{path}.source"
    if kind == "text":
        return {"type": "text", "text": expect_str(require(source, "data", spath), f"{spath}.data")}
    if kind == "base64":
        media_type = expect_str(require(source, "media_type", spath), f"{spath}.media_type")
        data = expect_str(require(source, "data", spath), f"{spath}.data")
        file: dict[str, Any] = {"file_data": f"data:{media_type};base64,{data}"}
        title = block.get("title")
        file["filename"] = expect_str(title, f"{path}.title") if title else "document.pdf"
        return {"type": "file", "file": file}
    raise unsupported_value(
        f"{spath}.type",
        f"document source `{kind}` is not supported for this model: send base64 or text",
    )
