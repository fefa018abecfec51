"""Token usage out of native Responses and Anthropic replies, for requests passed through.

When a provider speaks the client's dialect natively the reply is forwarded untouched, but the
platform still bills it and counts it against TPM limits, so the model-proxy reads the usage out
on the way: from a whole body, or from the stream's events as they pass. Usage comes back as the
chat-shaped :class:`~switchyard.schemas.openai.Usage` triple everything downstream counts.

Responses usage already counts cached prompt tokens inside ``input_tokens``
(``input_tokens_details.cached_tokens`` says how many). Anthropic's ``input_tokens`` does not:
tokens written to or read from the prompt cache are reported apart
(``cache_creation_input_tokens``, ``cache_read_input_tokens``), so the triple's
``prompt_tokens`` is their sum, which is what OpenAI would have reported for the same prompt.
Either way the cache reads and writes also travel on their own (``cache_read_tokens``,
``cache_write_tokens``): they are priced apart.

So do the provider's own web searches (``web_search_calls``), charged per call: Anthropic
reports them as ``usage.server_tool_use.web_search_requests`` (cumulative in a stream, like the
tokens); a Response lists each as a ``web_search_call`` item of its ``output``, so a whole body
counts those items and a stream counts the ``response.output_item.done`` events that carry one,
or the terminal event's ``output`` if it lists more.
Stream payloads are the event's JSON (``data: `` prefix optional); events that cannot carry usage
are rejected by a substring check before any decoding.
"""

from __future__ import annotations

import contextlib

import msgspec

from switchyard.schemas.openai import Usage, cache_counts


class _InputDetails(msgspec.Struct, frozen=True):
    cached_tokens: int | None = None
    cache_write_tokens: int | None = None


class _ResponsesUsage(msgspec.Struct, frozen=True):
    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None
    input_tokens_details: _InputDetails | None = None

    def triple(self, searches: int = 0) -> Usage:
        prompt = self.input_tokens or 0
        completion = self.output_tokens or 0
        total = self.total_tokens or prompt + completion
        d = self.input_tokens_details
        read, write = (
            cache_counts(prompt, d.cached_tokens, d.cache_write_tokens) if d is not None else (0, 0)
        )
        return Usage(
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=total,
            cache_read_tokens=read,
            cache_write_tokens=write,
            web_search_calls=searches,
        )


class _OutputItem(msgspec.Struct, frozen=True):
    type: str = ""


class _ResponseBody(msgspec.Struct, frozen=True):
    usage: _ResponsesUsage | None = None
    output: list[_OutputItem] | None = None

    def searches(self) -> int:
        return sum(item.type == _WEB_SEARCH_CALL for item in self.output or ())


class _ResponsesEvent(msgspec.Struct, frozen=True):
    type: str = ""
    response: _ResponseBody | None = None
    item: _OutputItem | None = None


class _ServerToolUse(msgspec.Struct, frozen=True):
    web_search_requests: int | None = None


class _AnthropicUsage(msgspec.Struct, frozen=True):
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    server_tool_use: _ServerToolUse | None = None


class _AnthropicBody(msgspec.Struct, frozen=True):
    usage: _AnthropicUsage | None = None


class _AnthropicEvent(msgspec.Struct, frozen=True):
    type: str = ""
    message: _AnthropicBody | None = None
    usage: _AnthropicUsage | None = None


_RESPONSE = msgspec.json.Decoder(_ResponseBody)
_RESPONSES_EVENT = msgspec.json.Decoder(_ResponsesEvent)
_MESSAGE = msgspec.json.Decoder(_AnthropicBody)
_ANTHROPIC_EVENT = msgspec.json.Decoder(_AnthropicEvent)
_TERMINAL = (b'"response.completed"', b'"response.incomplete"', b'"response.failed"')
_TERMINAL_TYPES = frozenset(t.strip(b'"').decode() for t in _TERMINAL)
_WEB_SEARCH_CALL = "web_search_call"
_ITEM_DONE = b'"response.output_item.done"'
_SEARCH_ITEM = b'"web_search_call"'
_ERRORS = (msgspec.DecodeError, msgspec.ValidationError)


def responses_usage(body: bytes) -> Usage | None:
    """The usage of a whole Response object, or None (malformed bodies count as no usage)."""
    if b'"usage"' not in body:
        return None
    try:
        response = _RESPONSE.decode(body)
    except _ERRORS:
        return None
    usage = response.usage
    return usage.triple(response.searches()) if usage is not None else None


def anthropic_usage(body: bytes) -> Usage | None:
    """The usage of a whole Anthropic Message, or None."""
    if b'"usage"' not in body:
        return None
    try:
        usage = _MESSAGE.decode(body).usage
    except _ERRORS:
        return None
    if usage is None:
        return None
    return _AnthropicCounts().add(usage).triple()


class ResponsesUsageTracker:
    """Follows a native Responses event stream; usage arrives with its terminal event.

    ``ended`` turns true with the stream's last event (``response.completed``, ``.incomplete``
    or ``.failed``, or an ``error`` event): a stream that stops before it was cut short.
    Web searches are counted as their items are done, and from the terminal event's
    ``output`` (the larger count wins: neither is missed if the other leaves it out).
    """

    def __init__(self) -> None:
        self.usage: Usage | None = None
        self.ended = False
        self._searches = 0  # web_search_call items done so far

    def feed(self, data: bytes) -> None:
        """Read one event's JSON payload."""
        search_done = _ITEM_DONE in data and _SEARCH_ITEM in data
        if (
            not search_done
            and not any(marker in data for marker in _TERMINAL)
            and not _is_error_event(data)
        ):
            return
        try:
            event = _RESPONSES_EVENT.decode(_payload(data))
        except _ERRORS:
            return
        if event.type == "response.output_item.done":
            if event.item is not None and event.item.type == _WEB_SEARCH_CALL:
                self._searches += 1
            return
        if event.type in _TERMINAL_TYPES or event.type == "error":
            self.ended = True
        response = event.response
        if response is not None and response.usage is not None:
            searches = max(self._searches, response.searches())
            self.usage = response.usage.triple(searches)


class AnthropicUsageTracker:
    """Follows a native Anthropic event stream.

    ``message_start`` carries the input (and cache) tokens, each ``message_delta`` the
    cumulative output tokens and, in newer API versions, cumulative input counts (and web
    searches) too; later counts replace earlier ones, as Anthropic's SDK does.
    """

    def __init__(self) -> None:
        self._counts: _AnthropicCounts | None = None
        self.ended = False  # message_stop, or an error event: the stream's last word

    @property
    def usage(self) -> Usage | None:
        return self._counts.triple() if self._counts is not None else None

    def feed(self, data: bytes) -> None:
        """Read one event's JSON payload."""
        if b'"message_start"' not in data and b'"message_delta"' not in data:
            if b'"message_stop"' in data or _is_error_event(data):
                with contextlib.suppress(*_ERRORS):
                    kind = _ANTHROPIC_EVENT.decode(_payload(data)).type
                    self.ended = self.ended or kind in ("message_stop", "error")
            return
        try:
            event = _ANTHROPIC_EVENT.decode(_payload(data))
        except _ERRORS:
            return
        usage = event.usage
        if event.type == "message_start" and event.message is not None:
            usage = event.message.usage
        elif event.type != "message_delta":
            return
        if usage is not None:
            self._counts = (self._counts or _AnthropicCounts()).add(usage)


class _AnthropicCounts:
    __slots__ = ("cache_read", "cache_write", "input", "output", "searches")

    def __init__(self) -> None:
        self.input = self.output = self.cache_read = self.cache_write = self.searches = 0

    def add(self, usage: _AnthropicUsage) -> _AnthropicCounts:
        if usage.input_tokens is not None:
            self.input = usage.input_tokens
        if usage.output_tokens is not None:
            self.output = usage.output_tokens
        if usage.cache_creation_input_tokens is not None:
            self.cache_write = usage.cache_creation_input_tokens
        if usage.cache_read_input_tokens is not None:
            self.cache_read = usage.cache_read_input_tokens
        tools = usage.server_tool_use
        if tools is not None and tools.web_search_requests is not None:
            self.searches = tools.web_search_requests
        return self

    def triple(self) -> Usage:
        read, write = max(0, self.cache_read), max(0, self.cache_write)
        prompt = max(0, self.input) + write + read
        return Usage(
            prompt_tokens=prompt,
            completion_tokens=self.output,
            total_tokens=prompt + self.output,
            cache_read_tokens=read,
            cache_write_tokens=write,
            web_search_calls=max(0, self.searches),
        )


def _is_error_event(data: bytes) -> bool:
    """An ``error`` event, told by its type (every Responses event carries ``"error":null``
    in its response object; decoding those would cost ~27 µs per 30 KB event)."""
    return b'"type":"error"' in data or b'"type": "error"' in data


def _payload(data: bytes) -> bytes:
    return data[5:] if data.startswith(b"data:") else data
