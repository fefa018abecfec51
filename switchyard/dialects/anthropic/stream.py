"""Streamed chat chunks -> Anthropic's Messages event stream, one chunk at a time.

A :class:`MessagesStream` is fed each chat chunk and returns the SSE frames to write, in the
order Anthropic's SDKs parse: ``message_start`` (usage ``input_tokens``: the first chunk's
when it already carries usage, else the prompt estimate the caller passes as ``input_tokens``,
which agents such as Claude Code read to track their context), ``ping``, then per content
block ``content_block_start``, ``content_block_delta`` (``text_delta``, ``thinking_delta`` or
``input_json_delta``), ``content_block_stop``, and at the end ``message_delta``
(``stop_reason``, ``stop_sequence``, usage: cumulative, so it carries the final input and
output tokens: the provider's count, which replaces the estimate of ``message_start`` in a
client that reads the last value) and ``message_stop``.
Reasoning the server streams apart (``reasoning_content``) becomes ``thinking`` blocks when the
request enabled ``thinking``; they carry an empty ``signature``.

Anthropic content blocks never overlap: a block stops before the next starts. Chat streams a
message's text first, then its tool calls, and a provider may interleave those (the header of
call 0, the header of call 1, then arguments for both). So the first tool call opens its block
as it comes, and the fragments of every other call wait, in order, until that block ends (with
the stream, or when text follows): each then follows as a whole block. Text after tool calls
closes them (their later fragments, which no known provider sends, would be dropped). A call
whose first fragments come without its name (litellm's translation of Gemini sends the id and
arguments first) waits for it the same way: its block opens once the name comes, as
``content_block_start`` must name the tool (one never named opens at the end, named ``""``).
Reasoning that comes while a call's block is open (between its argument fragments) would end
the call if its thinking block opened there: it is held and follows the calls as a thinking
block of its own (before any text that follows them). Calls
without an ``index``, or all under one, are told apart by their ids (:class:`_chat.CallKeys`).

A tool call's arguments are held until its block ends and then sent as one ``input_json_delta``
holding exactly the ``input`` a whole answer would carry (:func:`.reply.tool_input`): arguments
a model cut short or that are not a JSON object would otherwise reach the client as text its
SDK folds into ``{}`` or a non-object. While arguments are held, a ``ping`` goes out every
:data:`HELD_PING_S` seconds of fragments, so a proxy's read timeout does not cut a long call.

Deltas are the hot path: a precomputed prefix per block, the encoded fragment, a fixed suffix.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from switchyard.dialects import _chat
from switchyard.dialects._common import Body, encode, frame, new_id
from switchyard.dialects.anthropic import errors
from switchyard.dialects.anthropic.reply import stop_reason, tool_input, usage_object
from switchyard.dialects.anthropic.request import MessagesContext
from switchyard.errors import ApiError
from switchyard.schemas.openai import Usage

_DELTA_END = b"}}\n\n"
_JSON_DELTA = b'"input_json_delta","partial_json":'
_PING = frame("ping", b'{"type":"ping"}')
_STOP = frame("message_stop", b'{"type":"message_stop"}')
HELD_PING_S = 5.0  # while a tool call's arguments are held, a ping at least this often


class MessagesStream:
    """Translates one streamed chat completion into one Anthropic Messages event stream.

    Call :meth:`feed` with each chunk, then :meth:`finish` when the chat stream ends, or
    :meth:`fail` if it breaks; each returns the bytes to write (possibly empty).
    """

    def __init__(
        self,
        context: MessagesContext,
        *,
        message_id: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        input_tokens: int | None = None,
    ) -> None:
        """``input_tokens`` is the prompt's estimate ``message_start`` shows when the first
        chunk carries no usage (chat servers report it at the end)."""
        self._context = context
        self._input_estimate = input_tokens
        self._id = message_id or new_id("msg_")
        self._started = False
        self._closed = False
        self._blocks = 0  # content blocks started so far; the next block's index
        # "text", "thinking", a chat tool call index, or None
        self._open: str | int | None = None
        self._prefix = b""  # delta frame prefix of the open block
        self._done_calls: set[int] = set()
        self._held = _Waiting()  # the open call's arguments, sent when its block ends
        self._waiting: dict[int, _Waiting] = {}  # calls behind the open one, in arrival order
        self._flushing = False  # the waiting calls are being sent
        self._thoughts: list[str] = []  # reasoning that came while a call's block was open
        self._clock = clock
        self._pinged = 0.0  # when the last frame went out while arguments were held
        self._keys = _chat.CallKeys()
        self._finish: str | None = None
        self._refused = False
        self._matched: str | int | None = None
        self._usage: _chat.ChatUsage | None = None
        # Bytes the chat chunks generated (text, reasoning, tool calls): the estimate of an
        # answer its server did not count.
        self.generated = 0

    @property
    def message_id(self) -> str:
        return self._id

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
        if c.usage is not None:
            self._usage = c.usage
        if not self._started:
            self._start(c.model, out)
        choice = c.first()
        if choice is not None:
            delta = choice.delta or choice.message
            if delta is not None:
                thought = delta.thought() if self._context.thinking else ""
                if thought:
                    self._thinking(thought, out)
                text = delta.text()
                if text:
                    self._text(text, out)
                if delta.refusal:
                    self._text(delta.refusal, out)
                    self._refused = True
                for position, call in enumerate(delta.tool_calls or ()):
                    self._tool(call, position, out)
            if choice.finish_reason:
                self._finish = choice.finish_reason
            if choice.matched is not None:
                self._matched = choice.matched
        return b"".join(out)

    def finish(self, estimate: Usage | None = None) -> bytes:
        """The closing frames: the open block's stop, ``message_delta``, ``message_stop``.

        ``estimate`` is the usage ``message_delta`` carries when no chunk carried any
        (Switchyard's estimate, what the answer is billed); without either, 0 output tokens.
        """
        if self._closed:
            return b""
        if self._usage is None and estimate is not None:
            self._usage = _chat.chat_usage(estimate)
        out: list[bytes] = []
        if not self._started:
            self._start(None, out)
        self._close_block(out)
        self._flush_waiting(out)  # calls never named (their blocks say ``"name": ""``)
        finish = self._finish
        if self._refused and finish in (None, "stop"):  # the model declined
            finish = "content_filter"
        elif self._done_calls and finish in (None, "stop"):  # (Gemini says "stop" after tools)
            finish = "tool_calls"
        reason, sequence = stop_reason(finish, self._matched, self._context)
        usage = usage_object(self._usage) if self._usage is not None else {"output_tokens": 0}
        data = {
            "type": "message_delta",
            "delta": {"stop_reason": reason, "stop_sequence": sequence},
            "usage": usage,
        }
        out.append(frame("message_delta", encode(data)))
        out.append(_STOP)
        self._closed = True
        return b"".join(out)

    def fail(self, exc: ApiError) -> bytes:
        """An ``event: error`` frame that ends the stream (Anthropic's SDKs raise on it)."""
        if self._closed:
            return b""
        self._closed = True
        return errors.error_event(exc)

    def _start(self, model: str | None, out: list[bytes]) -> None:
        self._started = True
        usage = {"input_tokens": self._input_estimate or 0, "output_tokens": 0}
        if self._usage is not None:
            full = usage_object(self._usage)
            usage = {**full, "output_tokens": 0}
        message: dict[str, Any] = {
            "id": self._id,
            "type": "message",
            "role": "assistant",
            "model": model or self._context.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage,
        }
        out.append(frame("message_start", encode({"type": "message_start", "message": message})))
        out.append(_PING)

    def _text(self, text: str, out: list[bytes]) -> None:
        if self._open != "text":
            self._open_block("text", {"type": "text", "text": ""}, b'"text_delta","text":', out)
        out.append(self._prefix + encode(text) + _DELTA_END)

    def _thinking(self, text: str, out: list[bytes]) -> None:
        if isinstance(self._open, int):
            # Between a tool call's argument fragments (the model thinks while it writes the
            # call): opening a block here would end the call. It follows the calls instead.
            self._keep_alive(out)
            self._thoughts.append(text)
            return
        if self._open != "thinking":
            block = {"type": "thinking", "thinking": "", "signature": ""}
            self._open_block("thinking", block, b'"thinking_delta","thinking":', out)
        out.append(self._prefix + encode(text) + _DELTA_END)

    def _tool(self, fragment: _chat.ToolCall, position: int, out: list[bytes]) -> None:
        key = self._keys.key(fragment, position)
        function = fragment.function or _chat.FunctionCall()
        if function.arguments and isinstance(self._open, int):  # arguments are being held
            self._keep_alive(out)
        if self._open != key:
            if key in self._done_calls:
                return  # a late fragment of a closed block (see the module docstring)
            waiting = self._waiting.get(key)
            if waiting is None and not isinstance(self._open, int) and function.name:
                self._open_block(key, _tool_use(fragment.id, function.name), _JSON_DELTA, out)
                self._pinged = self._clock()
            else:
                # Another call's block is open and may still get arguments, or this call's
                # name has not come yet: it waits.
                waiting = waiting or self._waiting.setdefault(key, _Waiting())
                waiting.add(fragment.id, function)
                if isinstance(self._open, int) or waiting.name is None:
                    return
                del self._waiting[key]  # named now, and no call's block is open: it opens
                self._open_block(key, _tool_use(waiting.id, waiting.name), _JSON_DELTA, out)
                self._held = waiting
                self._pinged = self._clock()
                return
        if function.arguments:
            self._held.arguments.append(function.arguments)

    def _keep_alive(self, out: list[bytes]) -> None:
        """A ping when nothing went out for :data:`HELD_PING_S` while a call's block is open."""
        now = self._clock()
        if now - self._pinged >= HELD_PING_S:
            self._pinged = now
            out.append(_PING)

    def _flush_waiting(self, out: list[bytes]) -> None:
        """Each waiting call as one whole block (after the open one has been closed), then
        the reasoning that came while calls were open, as a thinking block of its own."""
        waiting, self._waiting = self._waiting, {}
        self._flushing = True
        for key, call in waiting.items():
            self._open_block(key, _tool_use(call.id, call.name), _JSON_DELTA, out)
            self._held = call
            self._close_block(out)
        self._flushing = False
        if self._thoughts:
            thought, self._thoughts = "".join(self._thoughts), []
            self._thinking(thought, out)
            self._close_block(out)

    def _open_block(
        self, key: str | int, block: dict[str, Any], delta_head: bytes, out: list[bytes]
    ) -> None:
        self._close_block(out)
        index = self._blocks
        self._blocks += 1
        self._open = key
        data = {"type": "content_block_start", "index": index, "content_block": block}
        out.append(frame("content_block_start", encode(data)))
        self._prefix = (
            b'event: content_block_delta\ndata: {"type":"content_block_delta","index":'
            + str(index).encode()
            + b',"delta":{"type":'
            + delta_head
        )

    def _close_block(self, out: list[bytes]) -> None:
        """Close the open block; after a tool call's, the calls waiting behind it follow."""
        if self._open is None:
            return
        was_call = isinstance(self._open, int)
        if isinstance(self._open, int):
            self._done_calls.add(self._open)
            arguments, self._held = "".join(self._held.arguments), _Waiting()
            if arguments:
                out.append(
                    self._prefix + encode(encode(tool_input(arguments)).decode()) + _DELTA_END
                )
        index = self._blocks - 1
        out.append(
            frame(
                "content_block_stop",
                b'{"type":"content_block_stop","index":' + str(index).encode() + b"}",
            )
        )
        self._open = None
        if was_call and not self._flushing:
            self._flush_waiting(out)


class _Waiting:
    """A tool call whose block cannot open yet: its id, name and argument fragments."""

    __slots__ = ("arguments", "id", "name")

    def __init__(self) -> None:
        self.id: str | None = None
        self.name: str | None = None
        self.arguments: list[str] = []

    def add(self, call_id: str | None, function: _chat.FunctionCall) -> None:
        self.id = self.id or call_id
        self.name = self.name or function.name
        if function.arguments:
            self.arguments.append(function.arguments)


def _tool_use(call_id: str | None, name: str | None) -> dict[str, Any]:
    return {"type": "tool_use", "id": call_id or new_id("toolu_"), "name": name or "", "input": {}}
