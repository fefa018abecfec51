"""Switchyard's token estimate for an answer whose provider reported no usage.

The prompt is the edge's own TPM estimate of the request
(:func:`switchyard.schemas.prompt_estimate.prompt_tokens`: a quarter token per byte, each inline
image, audio clip or file at most ``MEDIA_TOKENS``). An answer counts a quarter token per byte,
rounded up, of what the model generated, not of the JSON around it: the message text, its
refusal and reasoning, each tool call's name and arguments; in a Messages body the text,
thinking and tool_use blocks (name and input); in a Response the output items' text, refusals,
reasoning summaries, and tool calls' names, arguments and inputs. So the same answer costs about
the same in every dialect, streamed or not (the envelope of a Response alone was ~150 tokens).
Embeddings generate nothing. Only the fields named are decoded; a body that does not decode as
its operation's answer counts its bytes.

A streamed answer counts the same fields of the chunks delivered (:func:`chunk_size`): a chat
chunk's deltas (text, refusal, reasoning, tool calls' names and argument fragments), a Messages
stream's text, thinking and ``input_json`` deltas and its tool_use blocks' names, a Responses
stream's ``*.delta`` strings and its items' names (never the ``*.done`` events, which repeat
them). It counted a token per chunk: a provider that sends several words a chunk, or one chunk
for a whole answer of 8 KiB, was billed 3 tokens for ~2,000. The chunks are read only when the
bill needs it, i.e. never for a stream its provider counted (:class:`.replay.SentChunks`).

A Messages or Responses answer translated from chat is estimated before it is sent, from the
chat answer (or its chunks) with these same rules, and shows the estimate as its usage: that
usage (:class:`Estimated`) is then what it is billed. So does a chat or legacy completion
answer, whole or streamed with ``include_usage`` (:mod:`.shown_usage`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from switchyard.schemas import prompt_estimate
from switchyard.schemas.openai import Usage

BYTES_PER_TOKEN = 4


class Estimated(Usage, frozen=True, kw_only=True):
    """Usage Switchyard estimated because its provider reported none: billed flagged as an
    estimate (``prompt_tokens_estimated``). A translated Messages or Responses answer shows it
    (:class:`~switchyard.workers.modelproxy.dialects.Translated`), and so does a chat or
    completions answer (:mod:`.shown_usage`), so the client reads the figure its key is billed
    rather than 0, null or nothing."""


def estimated(request: bytes, completion: int) -> Estimated:
    """The estimate for the request body ``request`` and ``completion`` tokens."""
    prompt = prompt_tokens(request)
    return Estimated(
        prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
    )


def prompt_tokens(request: bytes) -> int:
    """The estimated prompt of the request body ``request`` (at least 1)."""
    return prompt_estimate.prompt_tokens(request)


def answer_tokens(op: str, body: bytes) -> int:
    """The estimated completion tokens of the whole answer ``body`` to a request of ``op``."""
    if op == "embed":
        return 0
    decoder = _DECODERS.get(op)
    if decoder is None:
        return tokens(len(body))
    try:
        answer = decoder.decode(body)
    except _ERRORS:  # (nested past the recursion limit: its bytes, as for one not JSON)
        return tokens(len(body))
    return tokens(answer.generated())


def tokens(size: int) -> int:
    """The tokens of ``size`` bytes of generated text: a quarter token per byte, rounded up."""
    return -(-size // BYTES_PER_TOKEN)


def chunk_size(op: str) -> Callable[[bytes], int]:
    """How many bytes of generated content one streamed chunk of ``op`` delivered (see the
    module): a chat or legacy completion chunk is its JSON, a Messages or Responses one its
    SSE frames (a translated chunk may hold several)."""
    if op == "embed":
        return _nothing
    if op in ("messages", "responses"):
        return _frames_size
    return _chat_chunk_size


def _size(*values: Any) -> int:
    """UTF-8 bytes of the strings among ``values`` (a JSON value other than a string: its
    encoding)."""
    total = 0
    for value in values:
        if isinstance(value, str):
            total += len(value.encode())
        elif isinstance(value, msgspec.Raw):
            total += len(value)
        elif value is not None:
            total += len(msgspec.json.encode(value))
    return total


# ---- chat completions (and legacy completions) --------------------------------------------


class _Function(msgspec.Struct, frozen=True):
    name: Any = None
    arguments: Any = None


class _ToolCall(msgspec.Struct, frozen=True):
    function: _Function | None = None


class _Part(msgspec.Struct, frozen=True):
    text: Any = None


class _ChatMessage(msgspec.Struct, frozen=True):
    """A chat answer's ``message``, or a chunk's ``delta``: the same fields."""

    content: str | list[_Part] | None = None
    refusal: Any = None
    reasoning_content: Any = None
    reasoning: Any = None  # newer vLLM's, Ollama's and OpenRouter's name for it
    tool_calls: list[_ToolCall] | None = None
    function_call: _Function | None = None

    def generated(self) -> int:
        if isinstance(self.content, list):
            total = _size(*(part.text for part in self.content))
        else:
            total = _size(self.content)
        # A server sending both names sends the same text twice.
        thought = self.reasoning_content or (
            self.reasoning if isinstance(self.reasoning, str) else None
        )
        total += _size(self.refusal, thought)
        calls = [c.function for c in self.tool_calls or ()] + [self.function_call]
        return total + sum(_size(f.name, f.arguments) for f in calls if f is not None)


class _Choice(msgspec.Struct, frozen=True):
    message: _ChatMessage | None = None
    delta: _ChatMessage | None = None  # a chunk's
    text: Any = None  # a legacy completion's


class _Chat(msgspec.Struct, frozen=True):
    choices: list[_Choice] | None = None

    def generated(self) -> int:
        total = 0
        for choice in self.choices or ():
            total += _size(choice.text)
            for m in (choice.message, choice.delta):
                if m is not None:
                    total += m.generated()
        return total


# ---- Anthropic Messages -------------------------------------------------------------------


class _Block(msgspec.Struct, frozen=True):
    text: Any = None
    thinking: Any = None
    name: Any = None
    input: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)


class _Message(msgspec.Struct, frozen=True):
    content: list[_Block] | None = None

    def generated(self) -> int:
        return sum(_size(b.text, b.thinking, b.name, b.input) for b in self.content or ())


# ---- OpenAI Responses ---------------------------------------------------------------------


class _OutputPart(msgspec.Struct, frozen=True):
    text: Any = None
    refusal: Any = None


class _Item(msgspec.Struct, frozen=True):
    content: list[_OutputPart] | None = None
    summary: list[_OutputPart] | None = None
    name: Any = None
    arguments: Any = None
    input: Any = None


class _Response(msgspec.Struct, frozen=True):
    output: list[_Item] | None = None

    def generated(self) -> int:
        total = 0
        for item in self.output or ():
            for part in (*(item.content or ()), *(item.summary or ())):
                total += _size(part.text, part.refusal)
            total += _size(item.name, item.arguments, item.input)
        return total


# ---- streamed chunks ---------------------------------------------------------------------


class _EventDelta(msgspec.Struct, frozen=True):
    text: Any = None
    thinking: Any = None
    partial_json: Any = None  # a tool_use block's input, in fragments


class _EventBlock(msgspec.Struct, frozen=True):
    text: Any = None
    thinking: Any = None
    name: Any = None


class _EventItem(msgspec.Struct, frozen=True):
    name: Any = None


class _Event(msgspec.Struct, frozen=True):
    """A Messages or Responses stream event: Anthropic's ``delta`` is an object, a Response's
    a string (the text, arguments, summary or refusal added)."""

    type: str = ""
    delta: str | _EventDelta | None = None
    content_block: _EventBlock | None = None  # Messages' content_block_start
    item: _EventItem | None = None  # Responses' output_item.added (and .done: not counted)

    def generated(self) -> int:
        d = self.delta
        if isinstance(d, str):
            return 0 if self.type in _NOT_GENERATED else len(d.encode())
        total = _size(d.text, d.thinking, d.partial_json) if d is not None else 0
        b = self.content_block
        if b is not None:
            total += _size(b.text, b.thinking, b.name)
        if self.item is not None and self.type == "response.output_item.added":
            total += _size(self.item.name)
        return total


# String deltas that are no generated text: a Response's audio, in base64.
_NOT_GENERATED = frozenset({"response.audio.delta"})
_CHAT_CHUNK = msgspec.json.Decoder(_Chat)
_EVENT = msgspec.json.Decoder(_Event)
# What a body that does not decode as its answer raises: one nested deeper than the
# interpreter's recursion limit too (msgspec decodes nested values recursively), which,
# uncaught, failed the answer it measured (500) or its bill.
_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, RecursionError)


def _nothing(payload: bytes) -> int:
    return 0


def _chat_chunk_size(payload: bytes) -> int:
    try:
        return _CHAT_CHUNK.decode(payload).generated()
    except _ERRORS:
        return len(payload)


def _frames_size(payload: bytes) -> int:
    total = 0
    for line in payload.split(b"\n"):
        if not line.startswith(b"data:"):
            continue  # (an event's name, a blank line)
        try:
            total += _EVENT.decode(line[5:]).generated()
        except _ERRORS:
            total += len(line) - 5
    return total


_DECODERS: dict[str, msgspec.json.Decoder[Any]] = {
    "chat": _CHAT_CHUNK,
    "complete": _CHAT_CHUNK,
    "messages": msgspec.json.Decoder(_Message),
    "responses": msgspec.json.Decoder(_Response),
}
