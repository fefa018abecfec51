"""Streamed chat chunks -> the Responses event stream, one chunk at a time.

A :class:`ResponsesStream` is fed each chat chunk as it arrives and returns the SSE frames to
write (``event: <type>\\ndata: <json>\\n\\n``), numbered by ``sequence_number`` from 0:

``response.created``, ``response.in_progress``; per message item ``output_item.added``,
``content_part.added``, ``output_text.delta``... ``output_text.done``, ``content_part.done``,
``output_item.done`` (refusals use ``refusal.delta``/``.done``); per tool call
``output_item.added``, ``function_call_arguments.delta``... ``.done``, ``output_item.done`` (for
a custom tool, ``custom_tool_call_input.delta``... ``.done``: the input is the string inside
the model's JSON arguments, decoded as they arrive, :class:`._custom.InputStream`); and
``response.completed`` (or ``response.incomplete``) carrying the whole Response and its usage.

The terminal event waits for :meth:`ResponsesStream.finish` because chat sends usage in a chunk
after the one with ``finish_reason``. Text deltas are the hot path: each frame is a precomputed
prefix, the encoded delta and the sequence number; nothing else is encoded per chunk. Tool call
items stay open until the end so providers that interleave the arguments of parallel calls are
still translated exactly. A call whose first fragments come without its name (litellm's
translation of Gemini sends the id and arguments first) opens its item once the name comes,
its arguments so far as one delta: its name says whether it is a custom tool's
(``custom_tool_call``) or a function's, and an item is never announced nameless (one never
named is a function call named ``""`` at the end). The stream drops reasoning
(``reasoning_content``): a translated Response has no reasoning items, so reasoning between a
call's argument fragments leaves the call whole.
"""

from __future__ import annotations

import time
from typing import Any

from switchyard.dialects import _chat
from switchyard.dialects._common import Body, encode, frame, new_id
from switchyard.dialects.responses import _custom
from switchyard.dialects.responses import _objects as o
from switchyard.dialects.responses.request import ResponsesContext
from switchyard.errors import ApiError
from switchyard.schemas.openai import Usage

_SEQ = b',"sequence_number":'
_END = b"}\n\n"


class _Part:
    __slots__ = ("index", "kind", "pieces", "prefix")

    def __init__(self, kind: str, index: int, prefix: bytes) -> None:
        self.kind = kind  # "text" or "refusal"
        self.index = index
        self.pieces: list[str] = []
        self.prefix = prefix

    def final(self) -> dict[str, Any]:
        text = "".join(self.pieces)
        return o.text_part(text) if self.kind == "text" else o.refusal_part(text)


class _Message:
    __slots__ = ("item_id", "output_index", "part", "parts")

    def __init__(self, item_id: str, output_index: int) -> None:
        self.item_id = item_id
        self.output_index = output_index
        self.parts: list[_Part] = []
        self.part: _Part | None = None

    def item(self, status: str) -> dict[str, Any]:
        return o.message_item(self.item_id, status, [p.final() for p in self.parts])


class _Call:
    __slots__ = (
        "call_id",
        "custom",
        "item_id",
        "name",
        "output_index",
        "pieces",
        "prefix",
        "text",
    )

    def __init__(
        self, item_id: str, output_index: int, call_id: str, name: str, custom: bool
    ) -> None:
        self.item_id = item_id
        self.output_index = output_index
        self.call_id = call_id
        self.name = name
        self.custom = custom  # a call to a custom tool: its input is decoded as it comes
        self.text = _custom.InputStream() if custom else None
        self.pieces: list[str] = []
        self.prefix = (
            b'event: response.function_call_arguments.delta\ndata: {"type":'
            b'"response.function_call_arguments.delta","item_id":'
            + encode(item_id)
            + b',"output_index":'
            + str(output_index).encode()
            + b',"delta":'
        )

    def item(self, status: str) -> dict[str, Any]:
        if self.custom:
            text = _custom.input_of("".join(self.pieces)) if self.pieces else ""
            return o.custom_call_item(self.item_id, self.call_id, self.name, text)
        return o.function_call_item(
            self.item_id, status, self.call_id, self.name, "".join(self.pieces)
        )


class _Unnamed:
    """A tool call whose fragments came before its name: its id and arguments so far."""

    __slots__ = ("id", "pieces")

    def __init__(self) -> None:
        self.id: str | None = None
        self.pieces: list[str] = []

    def add(self, call_id: str | None, arguments: str | None) -> None:
        self.id = self.id or call_id
        if arguments:
            self.pieces.append(arguments)


class ResponsesStream:
    """Translates one streamed chat completion into one Responses event stream.

    Call :meth:`feed` with each chunk, then :meth:`finish` when the chat stream ends, or
    :meth:`fail` if it breaks; each returns the bytes to write (possibly empty). Nothing is
    written before the first call, so the Response reports the model the upstream names.
    """

    def __init__(
        self,
        context: ResponsesContext,
        *,
        response_id: str | None = None,
        created_at: int | None = None,
    ) -> None:
        self._context = context
        self._id = response_id or new_id("resp_")
        self._suffix = self._id.removeprefix("resp_")
        self._created = created_at if created_at is not None else int(time.time())
        self._model: str | None = None
        self._seq = 0
        self._started = False
        self._closed = False
        self._outputs: dict[int, dict[str, Any]] = {}  # output_index -> finished item
        self._next_index = 0
        self._message: _Message | None = None
        self._calls: dict[int, _Call] = {}  # chat tool call index -> open item
        self._unnamed: dict[int, _Unnamed] = {}  # calls whose name has not come yet
        self._keys = _chat.CallKeys()
        self._finish: str | None = None
        self._usage: _chat.ChatUsage | None = None
        # Bytes the chat chunks generated (text, reasoning, tool calls): the estimate of an
        # answer its server did not count.
        self.generated = 0

    @property
    def response_id(self) -> str:
        return self._id

    @property
    def output(self) -> list[dict[str, Any]]:
        """The output items finished so far (every item, once :meth:`finish` returned), as
        the client saw them in ``response.output_item.done``."""
        return [self._outputs[i] for i in sorted(self._outputs)]

    @property
    def usage(self) -> Usage | None:
        """Token usage as chat reported it, once a chunk carried it."""
        return self._usage.triple() if self._usage is not None else None

    def feed(self, chunk: Body) -> bytes:
        """The frames for one chat chunk (bytes or a decoded dict; ``[DONE]`` is ignored).

        Raises:
            ProviderError: the chunk is not a chat completion chunk.
        """
        if self._closed or chunk == b"[DONE]":
            return b""
        c = _chat.decode(chunk)
        self.generated += c.generated()
        out: list[bytes] = []
        if not self._started:
            self._model = c.model
            self._start(out)
        if c.usage is not None:
            self._usage = c.usage
        choice = c.first()
        if choice is not None:
            delta = choice.delta or choice.message
            if delta is not None:
                text = delta.text()
                if text:
                    self._text("text", text, out)
                if delta.refusal:
                    self._text("refusal", delta.refusal, out)
                for position, call in enumerate(delta.tool_calls or ()):
                    self._tool(call, position, out)
            if choice.finish_reason:
                self._finish = choice.finish_reason
        return b"".join(out)

    def finish(self, estimate: Usage | None = None) -> bytes:
        """The closing frames: open items done, then ``response.completed``/``.incomplete``.

        ``estimate`` is the usage the Response carries when no chunk carried any
        (Switchyard's estimate, what the answer is billed); without either, ``usage: null``.
        """
        if self._closed:
            return b""
        if self._usage is None and estimate is not None:
            self._usage = _chat.chat_usage(estimate)
        out: list[bytes] = []
        if not self._started:
            self._start(out)
        status = o.final_status(self._finish)
        item_status = "incomplete" if status == "incomplete" else "completed"
        unnamed, self._unnamed = self._unnamed, {}
        for key, waiting in unnamed.items():  # never named: function calls named ""
            self._arguments(self._open_call(key, waiting.id, "", out), "".join(waiting.pieces), out)
        if self._message is None and not self._outputs and not self._calls:
            self._open_part(self._open_message(out), "text", out)
        if self._message is not None:
            self._close_message(item_status, out)
        for call in sorted(self._calls.values(), key=lambda c: c.output_index):
            self._close_call(call, item_status, out)
        self._calls.clear()
        now = int(time.time())
        response = self._response(
            status, usage=self._usage, completed_at=now if status == "completed" else None
        )
        self._emit(f"response.{status}", {"response": response}, out)
        self._closed = True
        return b"".join(out)

    def fail(self, exc: ApiError) -> bytes:
        """Frames that end the stream on an error: an ``error`` event, then ``response.failed``.

        Items still open are reported in the failed Response as ``incomplete``.
        """
        if self._closed:
            return b""
        out: list[bytes] = []
        if not self._started:
            self._start(out)
        self._emit("error", {"code": exc.code, "message": exc.message, "param": exc.param}, out)
        partial = dict(self._outputs)
        if self._message is not None:
            partial[self._message.output_index] = self._message.item("incomplete")
        for call in self._calls.values():
            partial[call.output_index] = call.item("incomplete")
        response = self._response(
            "failed",
            output=[partial[i] for i in sorted(partial)],
            error=o.error_object(exc.status, exc.message),
        )
        self._emit("response.failed", {"response": response}, out)
        self._closed = True
        return b"".join(out)

    # -- lifecycle ---------------------------------------------------------------------------

    def _start(self, out: list[bytes]) -> None:
        self._started = True
        response = self._response("in_progress", output=[])
        self._emit("response.created", {"response": response}, out)
        self._emit("response.in_progress", {"response": response}, out)

    def _response(
        self,
        status: str,
        *,
        output: list[dict[str, Any]] | None = None,
        usage: _chat.ChatUsage | None = None,
        error: dict[str, Any] | None = None,
        completed_at: int | None = None,
    ) -> dict[str, Any]:
        if output is None:
            output = [self._outputs[i] for i in sorted(self._outputs)]
        return o.response_object(
            self._context,
            response_id=self._id,
            created_at=self._created,
            model=self._model,
            status=status,
            output=output,
            usage=usage,
            finish_reason=self._finish,
            error=error,
            completed_at=completed_at,
        )

    def _emit(self, kind: str, fields: dict[str, Any], out: list[bytes]) -> None:
        data = {"type": kind, **fields, "sequence_number": self._seq}
        self._seq += 1
        out.append(frame(kind, encode(data)))

    def _delta(self, prefix: bytes, text: str, out: list[bytes]) -> None:
        out.append(prefix + encode(text) + _SEQ + str(self._seq).encode() + _END)
        self._seq += 1

    # -- message items -----------------------------------------------------------------------

    def _text(self, kind: str, text: str, out: list[bytes]) -> None:
        message = self._message or self._open_message(out)
        part = message.part
        if part is None or part.kind != kind:
            part = self._open_part(message, kind, out)
        part.pieces.append(text)
        self._delta(part.prefix, text, out)

    def _open_message(self, out: list[bytes]) -> _Message:
        index = self._next_index
        self._next_index += 1
        suffix = self._suffix if index == 0 else f"{self._suffix}_{index}"
        message = _Message(f"msg_{suffix}", index)
        self._message = message
        self._emit(
            "response.output_item.added",
            {"output_index": index, "item": message.item("in_progress")},
            out,
        )
        return message

    def _open_part(self, message: _Message, kind: str, out: list[bytes]) -> _Part:
        if message.part is not None:
            self._close_part(message, message.part, out)
        index = len(message.parts)
        event = "response.output_text.delta" if kind == "text" else "response.refusal.delta"
        prefix = (
            b"event: "
            + event.encode()
            + b'\ndata: {"type":"'
            + event.encode()
            + b'","item_id":'
            + encode(message.item_id)
            + b',"output_index":'
            + str(message.output_index).encode()
            + b',"content_index":'
            + str(index).encode()
            + (b',"logprobs":[]' if kind == "text" else b"")
            + b',"delta":'
        )
        part = _Part(kind, index, prefix)
        message.parts.append(part)
        message.part = part
        empty = o.text_part("") if kind == "text" else o.refusal_part("")
        self._emit("response.content_part.added", self._where(message, part, part=empty), out)
        return part

    def _close_part(self, message: _Message, part: _Part, out: list[bytes]) -> None:
        final = part.final()
        if part.kind == "text":
            self._emit(
                "response.output_text.done",
                self._where(message, part, text=final["text"], logprobs=[]),
                out,
            )
        else:
            self._emit(
                "response.refusal.done",
                self._where(message, part, refusal=final["refusal"]),
                out,
            )
        self._emit("response.content_part.done", self._where(message, part, part=final), out)
        message.part = None

    def _close_message(self, status: str, out: list[bytes]) -> None:
        message = self._message
        if message is None:
            return
        if message.part is not None:
            self._close_part(message, message.part, out)
        item = message.item(status)
        self._outputs[message.output_index] = item
        self._emit(
            "response.output_item.done", {"output_index": message.output_index, "item": item}, out
        )
        self._message = None

    @staticmethod
    def _where(message: _Message, content: _Part, /, **fields: Any) -> dict[str, Any]:
        return {
            "item_id": message.item_id,
            "output_index": message.output_index,
            "content_index": content.index,
            **fields,
        }

    # -- function call items -----------------------------------------------------------------

    def _tool(self, fragment: _chat.ToolCall, position: int, out: list[bytes]) -> None:
        key = self._keys.key(fragment, position)
        function = fragment.function or _chat.FunctionCall()
        call = self._calls.get(key)
        if call is None:
            unnamed = self._unnamed.get(key)
            if unnamed is not None or not function.name:
                # Its item waits for its name: whether it is a custom tool's decides its type.
                unnamed = unnamed or self._unnamed.setdefault(key, _Unnamed())
                unnamed.add(fragment.id, function.arguments)
                if not function.name:
                    return
                del self._unnamed[key]
                call = self._open_call(key, unnamed.id, function.name, out)
                self._arguments(call, "".join(unnamed.pieces), out)
                return
            call = self._open_call(key, fragment.id, function.name, out)
        elif function.name and not call.name:
            call.name = function.name
        self._arguments(call, function.arguments, out)

    def _open_call(self, key: int, call_id: str | None, name: str, out: list[bytes]) -> _Call:
        if self._message is not None:
            self._close_message("completed", out)
        index = self._next_index
        self._next_index += 1
        custom = bool(name) and name in self._context.custom
        call = _Call(
            f"{'ctc' if custom else 'fc'}_{self._suffix}_{index}",
            index,
            call_id or new_id("call_"),
            name,
            custom,
        )
        self._calls[key] = call
        self._emit(
            "response.output_item.added",
            {"output_index": index, "item": call.item("in_progress")},
            out,
        )
        return call

    def _arguments(self, call: _Call, arguments: str | None, out: list[bytes]) -> None:
        if arguments:
            call.pieces.append(arguments)
            if call.text is None:
                self._delta(call.prefix, arguments, out)
            elif text := call.text.feed(arguments):
                self._input_delta(call, text, out)

    def _input_delta(self, call: _Call, text: str, out: list[bytes]) -> None:
        self._emit(
            "response.custom_tool_call_input.delta",
            {"item_id": call.item_id, "output_index": call.output_index, "delta": text},
            out,
        )

    def _close_call(self, call: _Call, status: str, out: list[bytes]) -> None:
        item = call.item(status)
        if call.custom:
            where = {"item_id": call.item_id, "output_index": call.output_index}
            sent = call.text.sent if call.text is not None else ""
            # What the arguments had not streamed (all of it when they did not open as
            # ``{"input": "``); text already sent that the whole arguments contradict (cut
            # short, say) cannot be taken back: the ``.done`` event and the item are the input.
            if item["input"].startswith(sent) and len(item["input"]) > len(sent):
                self._input_delta(call, item["input"][len(sent) :], out)
            self._emit(
                "response.custom_tool_call_input.done", {**where, "input": item["input"]}, out
            )
            self._outputs[call.output_index] = item
            self._emit(
                "response.output_item.done", {"output_index": call.output_index, "item": item}, out
            )
            return
        self._emit(
            "response.function_call_arguments.done",
            {
                "item_id": call.item_id,
                "output_index": call.output_index,
                "name": call.name,
                "arguments": item["arguments"],
            },
            out,
        )
        self._outputs[call.output_index] = item
        self._emit(
            "response.output_item.done", {"output_index": call.output_index, "item": item}, out
        )
