"""Custom tools (``type: "custom"``) as chat function tools, and their calls both ways.

A custom tool takes free-form text instead of JSON arguments (OpenAI's Codex CLI sends its
``apply_patch`` as one, with a Lark grammar). Chat has only function tools, so a custom tool is
offered as a function of the same name taking one string, ``input``; its description is kept,
and the grammar (bounded to :data:`GRAMMAR_MAX` characters) is added to it so the model knows
the format, since a chat provider cannot constrain its output to the grammar. A call to such a
function comes back as a ``custom_tool_call`` whose ``input`` is that string (the raw arguments
text when the model wrote something else), and a ``custom_tool_call`` a client sends back is an
assistant tool call with arguments ``{"input": ...}``. A streamed call's input is decoded from
its arguments as they arrive (:class:`InputStream`): Codex waits 300 s for an event, and a
long patch from a slow model sent whole at the call's end was a silent stream.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import msgspec

from switchyard.dialects._common import (
    encode,
    expect_obj,
    expect_str,
    invalid,
    require,
    unsupported_value,
)

INPUT = "input"  # the one parameter of the function a custom tool becomes
GRAMMAR_MAX = 8000  # characters of a grammar put in a tool description
_SYNTAXES = frozenset({"lark", "regex"})
_FREE_TEXT = "The raw input of this tool as a JSON string: the text itself is free text, not JSON."
_DECODER = msgspec.json.Decoder()
_LENIENT = json.JSONDecoder()


def function_tool(tool: Mapping[str, Any], path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A custom tool as a chat function tool, and as the Response echoes it.

    Raises:
        InvalidRequest: a field is of the wrong type, or the format is neither text nor a
            ``lark``/``regex`` grammar; ``param`` names it.
    """
    name = expect_str(require(tool, "name", path), f"{path}.name")
    description = None
    if tool.get("description") is not None:
        description = expect_str(tool["description"], f"{path}.description")
    echo: dict[str, Any] = {"type": "custom", "name": name, "description": description}
    grammar = ""
    fmt = tool.get("format")
    if fmt is not None:
        fmt = expect_obj(fmt, f"{path}.format")
        kind = fmt.get("type")
        if kind == "grammar":
            syntax = expect_str(require(fmt, "syntax", f"{path}.format"), f"{path}.format.syntax")
            if syntax not in _SYNTAXES:
                raise invalid(
                    f"{path}.format.syntax", f"{path}.format.syntax: must be lark or regex"
                )
            definition = expect_str(
                require(fmt, "definition", f"{path}.format"), f"{path}.format.definition"
            )
            grammar = _grammar_note(syntax, definition)
        elif kind != "text":
            raise unsupported_value(
                f"{path}.format.type", f"custom tool format `{kind}` is not supported"
            )
        echo["format"] = dict(fmt)
    else:
        echo["format"] = {"type": "text"}
    text = "\n\n".join(part for part in (description, grammar) if part)
    function: dict[str, Any] = {
        "name": name,
        "parameters": {
            "type": "object",
            "properties": {
                INPUT: {
                    "type": "string",
                    "description": (
                        "The raw input of this tool, in the format the tool description gives."
                        if grammar
                        else _FREE_TEXT
                    ),
                }
            },
            "required": [INPUT],
        },
    }
    if text:
        function["description"] = text
    return {"type": "function", "function": function}, echo


def _grammar_note(syntax: str, definition: str) -> str:
    if len(definition) > GRAMMAR_MAX:
        definition = definition[:GRAMMAR_MAX] + "\n... (grammar cut short)"
    # Said so that it wins over a description written for a freeform tool ("do not wrap the
    # patch in JSON", as Codex's apply_patch says): here the call is JSON, its text is not.
    return (
        f'Call this function with JSON arguments {{"{INPUT}": "<raw text>"}}; the raw '
        f"text itself (not JSON) matches this {syntax} grammar:\n{definition}"
    )


def arguments(text: str) -> str:
    """A custom tool call's ``input`` as the chat call's arguments."""
    return encode({INPUT: text}).decode()


def input_of(raw: str) -> str:
    """The ``input`` of a chat call to a custom tool: the string argument, or the raw arguments
    text when the model did not write ``{"input": "..."}``. A model that obeyed a freeform
    tool's "do not wrap it in JSON" writes the text as a bare string, which servers pass on
    JSON-encoded (``"*** Begin Patch\n..."``): that string is the input, unquoted; so is
    ``{"input": ...}`` followed by a stray brace."""
    try:
        decoded = _DECODER.decode(raw)
    except msgspec.DecodeError:
        try:
            decoded, _ = _LENIENT.raw_decode(raw.strip())
        except ValueError:
            return raw
    if isinstance(decoded, str):
        return decoded
    if isinstance(decoded, dict):
        value = decoded.get(INPUT)
        if isinstance(value, str):
            return value
    return raw


# The opening of the arguments a custom call is asked for (``{"input": "``), or of a bare JSON
# string; whitespace allowed where JSON allows it.
_OPENING = re.compile(r'\s*(?:\{\s*"input"\s*:\s*)?"')
_HEX = frozenset("0123456789abcdefABCDEF")
_PLAIN = re.compile(r'[^"\\]+')


class InputStream:
    """A custom call's ``input`` decoded as its arguments arrive, so it can be streamed.

    :meth:`feed` takes each fragment of the chat call's arguments and returns the text of the
    ``input`` string it completes (possibly ""). Nothing comes until the arguments open as
    ``{"input": "`` or as a bare string; arguments that open otherwise stream nothing (the
    whole input is then known only at the end, from :func:`input_of`). A fragment that ends
    inside an escape keeps it until the next one completes it, a surrogate pair included.
    """

    __slots__ = ("_buffer", "_pieces", "_state")

    def __init__(self) -> None:
        self._buffer = ""
        self._state = "opening"  # opening | string | closed | off
        # The text returned so far, in pieces: a string grown by each fragment copied the whole
        # input every time (a 292 KB patch in 4-character fragments: seconds of CPU).
        self._pieces: list[str] = []

    @property
    def sent(self) -> str:
        """The text returned so far."""
        return "".join(self._pieces)

    def feed(self, fragment: str) -> str:
        if self._state in ("closed", "off"):
            return ""
        self._buffer += fragment
        if self._state == "opening":
            opened = _OPENING.match(self._buffer)
            if opened is None:
                if not _could_open(self._buffer):
                    self._state, self._buffer = "off", ""
                return ""
            self._state, self._buffer = "string", self._buffer[opened.end() :]
        text, used, closed = _decodable(self._buffer)
        self._buffer = self._buffer[used:]
        if closed:
            self._state, self._buffer = "closed", ""
        if text:
            try:
                decoded = _DECODER.decode(f'"{text}"'.encode())
            except msgspec.DecodeError:  # not JSON after all: stream no more
                self._state, self._buffer = "off", ""
                return ""
            if isinstance(decoded, str):
                self._pieces.append(decoded)
                return decoded
        return ""


def _could_open(text: str) -> bool:
    """Whether ``text`` may still grow into an opening (``{ "inp`` may; ``[`` may not)."""
    squeezed = "".join(text.split())
    return '{"input":"'.startswith(squeezed) or squeezed == ""


def _decodable(raw: str) -> tuple[str, int, bool]:
    """The part of a JSON string's inside (its opening quote already read) that decodes on its
    own: up to its closing quote, or short of an escape cut at the end; how much of ``raw``
    that used, and whether the string closed."""
    at = 0
    end = len(raw)
    while at < end:
        plain = _PLAIN.match(raw, at)  # a run without quote or backslash, read at C speed
        if plain is not None:
            at = plain.end()
            if at >= end:
                break
        char = raw[at]
        if char == '"':
            return raw[:at], at + 1, True
        if char != "\\":
            at += 1
            continue
        if at + 1 >= end:
            break  # a backslash, its escape still to come
        if raw[at + 1] != "u":
            at += 2
            continue
        digits = raw[at + 2 : at + 6]
        if len(digits) < 4:
            break
        if not set(digits) <= _HEX:
            at += 6  # malformed: the decode refuses it
            continue
        if 0xD800 <= int(digits, 16) <= 0xDBFF and at + 12 > end:
            break  # a high surrogate: its pair must come too
        at += 6
    return raw[:at], at, False
