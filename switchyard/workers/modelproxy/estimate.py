"""Switchyard's token estimate for an answer whose provider reported no usage.

The prompt is the edge's own TPM estimate of the request
(:func:`switchyard.schemas.prompt_estimate.prompt_tokens`: a quarter token per byte, each inline
image, audio clip or file at most ``MEDIA_TOKENS``). A
streamed answer counts a completion token per chunk delivered (OpenAI-style streams carry about
one token each: :mod:`.billing` counts them). A whole answer counts a quarter token per byte,
rounded up, of what the model generated, not of the JSON around it: the message text, its
refusal and reasoning, each tool call's name and arguments; in a Messages body the text,
thinking and tool_use blocks (name and input); in a Response the output items' text, refusals,
reasoning summaries, and tool calls' names, arguments and inputs. So the same answer costs about
the same in every dialect, streamed or not (the envelope of a Response alone was ~150 tokens).
Embeddings generate nothing. Only the fields named are decoded; a body that does not decode as
its operation's answer counts its bytes.

A Messages or Responses answer translated from chat is estimated before it is sent, from the
chat answer (or its chunks) with these same rules, and shows the estimate as its usage: that
usage (:class:`Estimated`) is then what it is billed.
"""

from __future__ import annotations

from typing import Any

import msgspec

from switchyard.schemas import prompt_estimate
from switchyard.schemas.openai import Usage

BYTES_PER_TOKEN = 4


class Estimated(Usage, frozen=True, kw_only=True):
    """Usage Switchyard estimated because its provider reported none: billed flagged as an
    estimate (``prompt_tokens_estimated``). A translated Messages or Responses answer shows it
    (:class:`~switchyard.workers.modelproxy.dialects.Translated`), so the client reads the
    figure its key is billed rather than 0 or null."""


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
        return _tokens(len(body))
    try:
        answer = decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return _tokens(len(body))
    return _tokens(answer.generated())


def _tokens(size: int) -> int:
    return -(-size // BYTES_PER_TOKEN)


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
    content: str | list[_Part] | None = None
    refusal: Any = None
    reasoning_content: Any = None
    tool_calls: list[_ToolCall] | None = None
    function_call: _Function | None = None


class _Choice(msgspec.Struct, frozen=True):
    message: _ChatMessage | None = None
    text: Any = None  # a legacy completion's


class _Chat(msgspec.Struct, frozen=True):
    choices: list[_Choice] | None = None

    def generated(self) -> int:
        total = 0
        for choice in self.choices or ():
            total += _size(choice.text)
            m = choice.message
            if m is None:
                continue
            if isinstance(m.content, list):
                total += _size(*(part.text for part in m.content))
            else:
                total += _size(m.content)
            total += _size(m.refusal, m.reasoning_content)
            calls = [c.function for c in m.tool_calls or ()] + [m.function_call]
            total += sum(_size(f.name, f.arguments) for f in calls if f is not None)
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


_DECODERS: dict[str, msgspec.json.Decoder[Any]] = {
    "chat": msgspec.json.Decoder(_Chat),
    "complete": msgspec.json.Decoder(_Chat),
    "messages": msgspec.json.Decoder(_Message),
    "responses": msgspec.json.Decoder(_Response),
}
