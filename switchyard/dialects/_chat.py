"""The slice of a chat completion (and of a streamed chunk) the dialect translators read.

Upstream replies are decoded once into these structs; every field is optional because
OpenAI-compatible servers differ in what they fill (``usage: null``, ``delta: {}``, ``content``
as a list of parts, vLLM's ``stop_reason``, SGLang's ``matched_stop``). Unknown fields are
skipped by the decoder, never materialised, which keeps a streamed chunk's decode to a few
microseconds.
"""

from __future__ import annotations

from typing import Any

import msgspec

from switchyard.dialects._common import Body
from switchyard.errors import ProviderError
from switchyard.schemas.openai import Usage, cache_counts


class PromptDetails(msgspec.Struct, frozen=True):
    cached_tokens: int | None = None
    cache_creation_tokens: int | None = None  # litellm's, for Anthropic's cache writes


class CompletionDetails(msgspec.Struct, frozen=True):
    reasoning_tokens: int | None = None


class ChatUsage(msgspec.Struct, frozen=True):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    prompt_tokens_details: PromptDetails | None = None
    completion_tokens_details: CompletionDetails | None = None
    # Anthropic's names, beside the triple when litellm (or a server like it) reports them.
    cache_read_input_tokens: int | None = None
    cache_creation_input_tokens: int | None = None

    @property
    def prompt(self) -> int:
        return self.prompt_tokens or 0

    @property
    def completion(self) -> int:
        return self.completion_tokens or 0

    @property
    def total(self) -> int:
        return self.total_tokens or (self.prompt + self.completion)

    @property
    def cached(self) -> int:
        d = self.prompt_tokens_details
        return (d.cached_tokens or 0) if d is not None else 0

    @property
    def reasoning(self) -> int:
        d = self.completion_tokens_details
        return (d.reasoning_tokens or 0) if d is not None else 0

    def triple(self) -> Usage:
        """The usage Switchyard counts: the triple, with the cache reads and writes in it."""
        d = self.prompt_tokens_details
        read, write = cache_counts(
            self.prompt,
            self.cache_read_input_tokens,
            self.cache_creation_input_tokens,
            d.cached_tokens if d is not None else None,
            d.cache_creation_tokens if d is not None else None,
        )
        return Usage(
            prompt_tokens=self.prompt,
            completion_tokens=self.completion,
            total_tokens=self.total,
            cache_read_tokens=read,
            cache_write_tokens=write,
        )


def chat_usage(usage: Usage) -> ChatUsage:
    """``usage`` (Switchyard's count, e.g. its estimate when the provider reported none) as
    the chat usage the translators render."""
    return ChatUsage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
    )


class FunctionCall(msgspec.Struct, frozen=True):
    name: str | None = None
    arguments: str | None = None


class ToolCall(msgspec.Struct, frozen=True):
    """A whole tool call (non-stream) or one fragment of it (stream, keyed by ``index``)."""

    index: int | None = None
    id: str | None = None
    type: str | None = None
    function: FunctionCall | None = None


class CallKeys:
    """Which streamed tool call a fragment belongs to.

    OpenAI numbers a stream's calls with ``index`` and sends each call's ``id`` once, in its
    first fragment. Some servers send no index (Gemini's OpenAI endpoint: each whole call in
    a chunk of its own, so all at position 0) or the same index for every call: a fragment that
    brings an id other than its call's starts a new call, under a key of its own (negative, so
    it never meets a real index), and later fragments of that index follow it.
    """

    __slots__ = ("_alias", "_fresh", "_ids")

    def __init__(self) -> None:
        self._alias: dict[int, int] = {}
        self._ids: dict[int, str] = {}
        self._fresh = -1

    def key(self, fragment: ToolCall, position: int) -> int:
        raw = fragment.index if fragment.index is not None else position
        key = self._alias.get(raw, raw)
        if fragment.id:
            known = self._ids.get(key)
            if known is None:
                self._ids[key] = fragment.id
            elif known != fragment.id:
                key, self._fresh = self._fresh, self._fresh - 1
                self._alias[raw] = key
                self._ids[key] = fragment.id
        return key


class Message(msgspec.Struct, frozen=True):
    """``choices[i].message`` of a completion, or ``choices[i].delta`` of a chunk."""

    content: str | list[Any] | None = None
    refusal: str | None = None
    tool_calls: list[ToolCall] | None = None
    # A reasoning model's thoughts, apart from its answer: vLLM's and SGLang's reasoning
    # parsers (``reasoning_content``; newer vLLM, Ollama and OpenRouter: ``reasoning``, which
    # some servers send as an object: only a string counts).
    reasoning_content: str | None = None
    reasoning: Any = None

    def thought(self) -> str:
        """The reasoning text of this message or delta ("" when none)."""
        if self.reasoning_content:
            return self.reasoning_content
        return self.reasoning if isinstance(self.reasoning, str) else ""

    def generated(self) -> int:
        """The UTF-8 bytes the model generated in this message or delta: its text, refusal,
        reasoning and tool calls' names and arguments (what an estimate counts when the
        server reports no usage: :mod:`switchyard.workers.modelproxy.estimate`)."""
        c = self.content  # (a text delta, nearly every chunk, reads only this)
        total = len(c.encode()) if isinstance(c, str) else len(self.text().encode())
        if self.reasoning_content or self.reasoning:
            total += len(self.thought().encode())
        if self.refusal:
            total += len(self.refusal.encode())
        for call in self.tool_calls or ():
            f = call.function
            if f is not None:
                total += len((f.name or "").encode()) + len((f.arguments or "").encode())
        return total

    def text(self) -> str:
        """``content`` as text (some servers send a list of ``{"type":"text"}`` parts)."""
        c = self.content
        if c is None:
            return ""
        if isinstance(c, str):
            return c
        return "".join(
            p.get("text") or "" for p in c if isinstance(p, dict) and p.get("type") == "text"
        )


class Choice(msgspec.Struct, frozen=True):
    index: int | None = 0
    message: Message | None = None
    delta: Message | None = None
    finish_reason: str | None = None
    # vLLM (and servers built on it) name the stop string that ended the answer here, SGLang
    # in ``matched_stop``.
    stop_reason: str | int | None = None
    matched_stop: str | int | None = None

    @property
    def matched(self) -> str | int | None:
        """The stop string (or stop token id) that ended the answer, when the server says."""
        return self.stop_reason if self.stop_reason is not None else self.matched_stop


class ChatCompletion(msgspec.Struct, frozen=True):
    """A chat completion or a ``chat.completion.chunk``: the same envelope."""

    id: str | None = None
    model: str | None = None
    choices: list[Choice] | None = None
    usage: ChatUsage | None = None

    def generated(self) -> int:
        """The UTF-8 bytes generated in every choice (:meth:`Message.generated`)."""
        total = 0
        for choice in self.choices or ():
            m = choice.delta or choice.message
            if m is not None:
                total += m.generated()
        return total

    def first(self) -> Choice | None:
        """Choice 0: the dialects have no ``n``, so only the first answer is translated."""
        for choice in self.choices or ():
            if not choice.index:  # 0, or null from servers that leave it out
                return choice
        return None


_DECODER = msgspec.json.Decoder(ChatCompletion)


def decode(raw: Body) -> ChatCompletion:
    """Decode a chat completion or chunk from bytes or a dict.

    Raises:
        ProviderError: the upstream reply is not a chat completion (``provider`` is empty: the
            caller knows which deployment answered and may re-raise with it).
    """
    try:
        if isinstance(raw, bytes | bytearray | memoryview):
            return _DECODER.decode(raw)
        return msgspec.convert(raw, ChatCompletion)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise ProviderError(
            f"upstream reply is not a chat completion: {exc}",
            provider="",
            code="invalid_upstream_reply",
        ) from None
