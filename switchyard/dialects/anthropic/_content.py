"""Anthropic ``messages`` and ``system`` -> chat messages and content parts.

Consecutive turns of one role become one chat message, as Anthropic merges them (chat templates
that require alternating roles refuse them otherwise); an assistant turn with nothing a chat
model reads (only thinking blocks, no content, empty text) is left out and its neighbours merge.
An assistant's ``tool_use`` blocks become its ``tool_calls``; a user's ``tool_result`` blocks
become ``tool`` messages placed right after the assistant message, before the rest of that user
turn, as chat requires; one marked ``is_error`` has its text opened with ``Error:`` (unless it
opens so already). Images in a tool result cannot ride in a ``tool`` message, so they follow in
the user message. Images become ``image_url`` parts (base64 sources as data: URIs), PDFs
``file`` parts (the title as file name), plain-text documents text (their title, a blank line,
then the text). ``thinking`` and ``redacted_thinking`` blocks are dropped; blocks that need
Anthropic's servers or storage are refused naming their ``type``.
"""

from __future__ import annotations

import re
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
from switchyard.dialects.chat_fields import ChatFields

ERROR_MARK = "Error: "  # opens the text of a tool result marked ``is_error``
_TURN = re.compile(r"[^.\[]+\[\d+\]")  # the turn of a block's path: ``messages[3]``
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


def chat_messages(
    raw_messages: list[Any], path: str, fields: ChatFields | None
) -> list[dict[str, Any]]:
    """``messages`` as chat messages, consecutive turns of one role merged into one.

    Anthropic merges consecutive user (or assistant) turns itself; chat templates that require
    roles to alternate (Mistral's, Gemma's) refuse them. An assistant turn that carries nothing
    a chat model reads (only ``thinking`` blocks, ``[]``, empty text: an interrupted agent
    turn) is left out, so the user turns around it merge too. A merged user turn keeps its
    blocks' order: its tool results first (as ``tool`` messages, right after the assistant
    message that called them), then the rest in one user message. ``fields``, if any, is told
    which turn or block each message, part and call came from.
    """
    out: list[dict[str, Any]] = []
    user: list[tuple[Mapping[str, Any], str]] = []  # the blocks of the user turn being gathered
    texts: list[str] = []  # the assistant turn being gathered
    calls: list[dict[str, Any]] = []
    said: tuple[list[str], list[str]] = ([], [])  # (noting) the paths of its turns and texts
    for i, raw in enumerate(raw_messages):
        mpath = f"{path}[{i}]"
        msg = expect_obj(raw, mpath)
        role = expect_str(require(msg, "role", mpath), f"{mpath}.role")
        content = require(msg, "content", mpath)
        if role == "assistant":
            wrote, called = _assistant(content, f"{mpath}.content", fields)
            if not wrote and not called:
                continue
            _flush_user(user, out, fields)
            texts += wrote
            calls += called
            if fields is not None:
                said[0].append(mpath)
                said[1].extend(_text_paths(content, f"{mpath}.content"))
        elif role == "user":
            _flush_assistant(texts, calls, out, (said, fields))
            user += _user_blocks(content, f"{mpath}.content")
        elif role == "system":  # newer API versions allow system turns inside `messages`
            _flush_user(user, out, fields)
            _flush_assistant(texts, calls, out, (said, fields))
            system = text_content(system_texts(content, f"{mpath}.content"))
            out.append({"role": "system", "content": system})
            if fields is not None:
                fields.note(out[-1], _turn_fields(mpath))
                fields.parts(system, _text_paths(content, f"{mpath}.content", everyone=True))
        else:
            raise invalid(
                f"{mpath}.role", f"{mpath}.role: must be user, assistant or system (got `{role}`)"
            )
    _flush_user(user, out, fields)
    _flush_assistant(texts, calls, out, (said, fields))
    return out


def _turn_fields(path: str) -> dict[str, str]:
    """Where the fields of a chat message made of the one turn at ``path`` came from."""
    return {"": path, "role": f"{path}.role", "content": f"{path}.content"}


def _text_paths(content: Any, path: str, *, everyone: bool = False) -> list[str]:
    """(noting) The paths of the text blocks of a turn's ``content`` that became its chat
    message's texts: the non-empty ones (``everyone``: all, as a system turn keeps them); of
    a string, its own (its turns merged with others, it is one of their parts)."""
    if isinstance(content, str):
        return [path] if content or everyone else []
    return [
        f"{path}[{j}]"
        for j, block in enumerate(content)
        if block.get("type") == "text" and (everyone or block.get("text"))
    ]


def _user_blocks(content: Any, path: str) -> list[tuple[Mapping[str, Any], str]]:
    if isinstance(content, str):
        return [({"type": "text", "text": content}, path)]
    blocks = expect_list(content, path)
    if not blocks:  # Anthropic refuses it; translated, it vanished
        raise invalid(path, f"{path}: must not be empty")
    return [(expect_obj(raw, f"{path}[{j}]"), f"{path}[{j}]") for j, raw in enumerate(blocks)]


def _flush_assistant(
    texts: list[str],
    calls: list[dict[str, Any]],
    out: list[dict[str, Any]],
    turns: tuple[tuple[list[str], list[str]], ChatFields | None],
) -> None:
    said, fields = turns
    if not texts and not calls:
        return
    message: dict[str, Any] = {
        "role": "assistant",
        "content": text_content(texts) if texts else None,
    }
    if calls:
        message["tool_calls"] = list(calls)
    out.append(message)
    if fields is not None:
        if len(said[0]) == 1:  # merged turns have no one field of their own
            fields.note(message, _turn_fields(said[0][0]))
        fields.parts(message["content"], said[1])
    texts.clear()
    calls.clear()
    said[0].clear()
    said[1].clear()


def _assistant(
    content: Any, path: str, fields: ChatFields | None
) -> tuple[list[str], list[dict[str, Any]]]:
    """An assistant turn's texts (empty ones left out) and tool calls."""
    if isinstance(content, str):
        return ([content] if content else []), []
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, raw in enumerate(expect_list(content, path)):
        bpath = f"{path}[{j}]"
        block = expect_obj(raw, bpath)
        kind = block.get("type")
        if kind == "text":
            text = expect_str(require(block, "text", bpath), f"{bpath}.text")
            if text:
                texts.append(text)
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
            if fields is not None:
                fields.note(
                    calls[-1],
                    {
                        "": bpath,
                        "id": f"{bpath}.id",
                        "type": f"{bpath}.type",
                        "function": bpath,
                        "function.name": f"{bpath}.name",
                        "function.arguments": f"{bpath}.input",
                    },
                )
        elif not isinstance(kind, str):
            raise invalid(f"{bpath}.type", f"{bpath}.type: must be a string")
        elif kind not in _DROPPED_BLOCKS:
            raise unsupported_value(
                f"{bpath}.type",
                f"assistant content block type `{kind}` is not supported for this model",
            )
    return texts, calls


def _flush_user(
    blocks: list[tuple[Mapping[str, Any], str]],
    out: list[dict[str, Any]],
    fields: ChatFields | None,
) -> None:
    """The gathered user turn: its tool results as ``tool`` messages, then the rest."""
    parts: list[dict[str, Any]] = []
    held: list[dict[str, Any]] = []  # images from tool results, sent with the user turn
    for block, bpath in blocks:
        if block.get("type") == "tool_result":
            out.append(_tool_result(block, bpath, (held, fields)))
            if fields is not None:
                notes = {"tool_call_id": f"{bpath}.tool_use_id", "content": f"{bpath}.content"}
                fields.note(out[-1], {"": bpath, **notes})
        else:
            parts.append(_user_part(block, bpath, fields))
    blocks.clear()
    parts = held + parts
    if not parts:
        return
    if all(p["type"] == "text" for p in parts):
        out.append({"role": "user", "content": text_content([p["text"] for p in parts])})
    else:
        out.append({"role": "user", "content": parts})
    if fields is not None:
        _note_user(out[-1], parts, fields)


def _note_user(message: dict[str, Any], parts: list[dict[str, Any]], fields: ChatFields) -> None:
    """Notes a user message made of ``parts``: as its turn when they came from one, its text
    parts (new ones when all are text) as the blocks they came from."""
    turns = set()
    for part in parts:
        turn = _TURN.match(fields.field_of(part, "") or "")
        turns.add(turn.group(0) if turn is not None else "")
    notes = {}
    if len(turns) == 1 and "" not in turns:
        notes = _turn_fields(turns.pop())
    if len(parts) == 1 and isinstance(message["content"], str):  # that part's text
        content = fields.field_of(parts[0], "text")
        if content is not None:
            notes["content"] = content
    if notes:
        fields.note(message, notes)
    fields.parts(message["content"], parts)


def _tool_result(
    block: Mapping[str, Any], path: str, into: tuple[list[dict[str, Any]], ChatFields | None]
) -> dict[str, Any]:
    held, fields = into
    call_id = expect_str(require(block, "tool_use_id", path), f"{path}.tool_use_id")
    content = block.get("content")
    # Chat has no flag for a failed tool call: the model would read the error as the tool's
    # answer. The text says so instead.
    failed = ERROR_MARK if block.get("is_error") is True else ""
    if content is None or isinstance(content, str):
        return {"role": "tool", "tool_call_id": call_id, "content": _marked(failed, content or "")}
    texts: list[str] = []
    wrote: list[dict[str, Any]] = []  # (noting) the text parts
    media = 0
    for k, raw in enumerate(expect_list(content, f"{path}.content")):
        kpath = f"{path}.content[{k}]"
        part = _user_part(expect_obj(raw, kpath), kpath, fields)
        if part["type"] == "text":
            texts.append(part["text"])
            if fields is not None:
                wrote.append(part)
        else:
            held.append(part)
            media += 1
    if failed:
        texts = [_marked(failed, texts[0]), *texts[1:]] if texts else [failed.strip()]
    if media:
        texts.append(f"[{media} attachment(s) of this result follow in the next message]")
    told = text_content(texts) if texts else ""
    if fields is not None:
        fields.parts(told, wrote)
    return {"role": "tool", "tool_call_id": call_id, "content": told}


def _marked(mark: str, text: str) -> str:
    """``text`` opened with ``mark``, unless it already says it is an error."""
    if mark and text.lstrip()[: len(mark)].lower() == mark.lower():
        return text
    return mark + text


def _user_part(block: Mapping[str, Any], path: str, fields: ChatFields | None) -> dict[str, Any]:
    """A user block as a chat content part, noted in ``fields`` if any."""
    part = _user_part_of(block, path)
    if fields is None:
        return part
    if not path.endswith("]"):  # a turn's content given as a string: its own text
        fields.note(part, {"": path, "text": path})
        return part
    source = f"{path}.source"
    if part["type"] == "text":
        notes = {"text": source if block.get("type") == "document" else f"{path}.text"}
    elif part["type"] == "image_url":
        notes = {"image_url": source, "image_url.url": source}
    else:
        notes = {"file": source, "file.file_data": source, "file.filename": f"{path}.title"}
    fields.note(part, {"": path, "type": f"{path}.type", **notes})
    return part


def _user_part_of(block: Mapping[str, Any], path: str) -> dict[str, Any]:
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
        text = expect_str(require(source, "data", spath), f"{spath}.data")
        title = block.get("title")
        if title:  # the model reads which document this is, as Claude does
            text = f"{expect_str(title, f'{path}.title')}\n\n{text}"
        return {"type": "text", "text": text}
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
