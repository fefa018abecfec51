"""What of a native (passed-through) event stream reaches the client, and when it fails.

Anthropic answers an overloaded or failing call with HTTP 200 and an ``error`` event as its
stream's first word, and OpenAI's Responses API may do the same with ``error`` or
``response.failed``. Relayed as they are, the client would get a failure the gateway never
tried elsewhere, the deployment would stay in use, and the key would be billed an estimate
for an answer with nothing in it. So, until the first event of the answer itself, such an
event is raised as the failure the same error answered as an HTTP status would be
(:func:`reported_failure`): tried on another deployment and cooled when the provider failed
(``overloaded_error`` as Anthropic's 529, ``api_error`` a 5xx, a rate limit a 429), the
client's 400 when the request is at fault.

The opening events carry nothing of the answer (Anthropic's ``message_start`` and ``ping``,
Responses' ``response.created``, ``.queued`` and ``.in_progress``): :class:`Opening` holds them
back until the first event that does, which follows at once on a working stream, so an error
right after them still fails over. Once anything else went out, an error event is relayed as
it came (the client's dialect's own ending: nothing to retry) and then raised as the attempt's
failure (:class:`Relayed`), so the deployment is cooled as for any stream that failed midway
(:mod:`..midstream`), and the caller gets no second error.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec

from switchyard.errors import ApiError, ProviderError
from switchyard.schemas.openai import Usage
from switchyard.schemas.secret import Secret, redact
from switchyard.workers.modelproxy.providers import upstream_errors as ue
from switchyard.workers.modelproxy.providers.base import (
    Adapter,
    Completion,
    ProviderCall,
    StreamEvent,
)

# The events that open a stream before any of the answer, per dialect (the passthrough's op).
OPENING = {
    "messages": frozenset({"message_start", "ping"}),
    "responses": frozenset({"response.created", "response.queued", "response.in_progress"}),
}
# Responses events after which the provider works without a word until its next delta: an
# output item opened (a reasoning item thinks silently, without summaries, for minutes), a
# hosted tool in progress or searching (web and file search, code, image generation).
_QUIET_AFTER = ("response.output_item.added",)
_QUIET_SUFFIXES = (".in_progress", ".searching", ".interpreting", ".generating")
_FAILED = {"messages": frozenset({"error"}), "responses": frozenset({"error", "response.failed"})}
# Anthropic's error types, as the HTTP status each comes with when it is the whole answer
# (docs.anthropic.com "Errors"); any other type is taken for the provider's failure (500).
_ANTHROPIC_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": ue.OVERLOADED,
}
# Responses error codes that name something wrong in the request (the image ones, as in
# OpenAI's ``ResponseError.code``); ``rate_limit_exceeded`` is a 429; the rest (``server_error``,
# ``vector_store_timeout``, none) the provider's failure.
_RESPONSES_CLIENT_CODES = frozenset(
    {"empty_image_file", "failed_to_download_image", "unsupported_image_media_type"}
)
_DOC = msgspec.json.Decoder(dict[str, Any])


class _Typed(msgspec.Struct):
    type: str = ""


_TYPED = msgspec.json.Decoder(_Typed)


def event_type(event: bytes, data: bytes) -> str:
    """An SSE event's type: its ``event:`` line, else its data's ``type`` ("" for neither)."""
    for line in event.split(b"\n"):
        if line.startswith(b"event:"):
            return line[6:].strip().decode("utf-8", "replace")
    try:
        return _TYPED.decode(data).type
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return ""


def idle_clock(op: str, kind: str, running: bool) -> bool:
    """Whether the idle clock (``timeouts.idle_s``) runs after an event of type ``kind`` of a
    passed-through ``op`` stream, ``running`` whether it ran before it.

    Messages: from the answer's first event on, every event is activity (Anthropic's ``ping``
    too, which it sends while a model thinks). Responses: only from the first ``*.delta``
    event; after an event that opens silent work (``response.output_item.added``, a
    ``*.in_progress``, ``*.searching``, ``*.interpreting`` or ``*.generating``) it stops
    until the next delta; any other event leaves it as it was.
    """
    if op != "responses":
        return True
    if kind.endswith(".delta"):
        return True
    if kind in _QUIET_AFTER or kind.endswith(_QUIET_SUFFIXES):
        return False
    return running


def named_type(event: bytes) -> str:
    """An SSE event's ``event:`` line's type, read from its first line only ("" for none)."""
    if not event.startswith(b"event:"):
        return ""
    end = event.find(b"\n")
    return event[6 : end if end >= 0 else len(event)].strip().decode("utf-8", "replace")


class Activity:
    """Whether a passed-through stream's idle clock runs (:attr:`running`), event by event
    (:func:`idle_clock`): :meth:`feed` takes each ``data:`` line, :meth:`after` each whole
    event. An event's type is read from its ``event:`` line, its data only without one."""

    def __init__(self, op: str) -> None:
        self._op = op
        self._data: list[bytes] = []
        self.running = False

    def feed(self, line: bytes) -> None:
        if self._op == "responses":
            self._data.append(line)

    def after(self, event: bytes, relayed: bool) -> None:
        """``event`` was read; ``relayed``: the answer began (the opening is no activity)."""
        lines, self._data = self._data, []
        if not relayed:
            return
        kind = ""
        if self._op == "responses":
            kind = named_type(event) or event_type(
                b"", b"\n".join(line[5:].strip() for line in lines)
            )
        self.running = idle_clock(self._op, kind, self.running)


def reported_failure(
    op: str, kind: str, data: bytes, provider: str, key: Secret | None
) -> ApiError | None:
    """The failure an event of type ``kind`` (data ``data``) reports, or None for any other."""
    if kind not in _FAILED.get(op, ()):
        return None
    try:
        doc = _DOC.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        doc = {}
    if op == "messages":
        error = _dict(doc.get("error"))
        kind_of = _text(error.get("type"))
        status = _ANTHROPIC_STATUS.get(kind_of, 500)
        return _failure(status, _text(error.get("message")), kind_of, provider, key)
    if kind == "response.failed":
        error = _dict(_dict(doc.get("response")).get("error"))
    else:  # ``error``: its fields on the event (the API reference) or under ``error``
        error = _dict(doc.get("error")) or doc
    code = _text(error.get("code")) or _text(error.get("type"))
    return _failure(_responses_status(code), _text(error.get("message")), code, provider, key)


def _responses_status(code: str) -> int:
    if code in ("rate_limit_exceeded", "rate_limit_error"):
        return 429
    if (
        code == "invalid_request_error"
        or code.startswith(("invalid_", "image_"))
        or code in _RESPONSES_CLIENT_CODES
    ):
        return 400
    return 500


def _failure(status: int, message: str, kind: str, provider: str, key: Secret | None) -> ApiError:
    text = redact(message or "no message", key)[:500]
    said = f"{text} ({kind or 'an error'} in the provider's stream)"
    exc = ue.from_status(status, said, provider=provider)
    if isinstance(exc, ProviderError) and exc.upstream_status is None:
        exc.upstream_status = status
    return exc


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


class Opening:
    """Holds a native stream's opening events back until its first event of the answer.

    :meth:`feed` takes each ``data:`` line of an event, :meth:`take` the whole event and returns
    what to relay now (the held events first); it raises the failure an error event reports
    while nothing was relayed. Once something was, events pass as they come, unread.
    """

    def __init__(self, op: str, provider: str, key: Secret | None) -> None:
        self._op, self._provider, self._key = op, provider, key
        self._held: list[bytes] = []
        self._data: list[bytes] = []  # the payload of the event being read
        self.relayed = False

    def feed(self, line: bytes) -> None:
        """One ``data:`` line of the event being read."""
        if not self.relayed:
            self._data.append(line[5:].strip())

    def take(self, event: bytes) -> list[bytes]:
        """``event`` (one SSE event, whose ``data:`` lines were fed), in order.

        Raises:
            ApiError: ``event`` reports a failure and nothing was relayed yet.
        """
        if self.relayed:
            return [event]
        data, self._data = b"\n".join(self._data), []
        kind = event_type(event, data)
        failure = reported_failure(self._op, kind, data, self._provider, self._key)
        if failure is not None:
            raise failure
        if kind in OPENING.get(self._op, ()):
            self._held.append(event)
            return []
        self.relayed = True
        out, self._held = [*self._held, event], []
        return out

    def events(self, event: bytes, usage: Usage | None) -> list[StreamEvent]:
        """:meth:`take`'s, as the events to yield; while all are held, an empty one: the
        provider began (:mod:`..stream_watch` tells the caller)."""
        return [StreamEvent(out, usage) for out in self.take(event)] or [StreamEvent(None)]


def relayed_failure(op: str, event: bytes, provider: str, key: Secret | None) -> ApiError | None:
    """The failure ``event`` (one whole SSE event of the answer, as relayed) reports, or None.

    Cheap for every other event: only one named a failure by its ``event:`` line (as Anthropic
    and OpenAI name every event), or without one whose data may be an error, is decoded.
    """
    failed = _FAILED.get(op)
    if failed is None:
        return None
    if event.startswith(b"event:"):
        end = event.find(b"\n")
        named = event[6 : end if end >= 0 else len(event)].strip()
        if named.decode("utf-8", "replace") not in failed:
            return None
    elif b'"error"' not in event and b'"response.failed"' not in event:
        return None
    data = b"\n".join(line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:"))
    return reported_failure(op, event_type(event, data), data, provider, key)


class Relayed:
    """A native stream's adapter for one call (Messages to Anthropic, Responses to OpenAI).

    The provider's events go to the client as they came. One that reports a failure once the
    answer began (an ``error`` event, Responses' ``response.failed``) is relayed too, the
    stream's end in the client's own dialect, and then raised as the attempt's failure: the
    handler cools the deployment as for any stream that failed midway (a bad-request error
    excepted), and its error message tells the edges to relay no second one
    (:attr:`ended_in_dialect`, ``Sy-Error-In-Stream``).
    """

    def __init__(self, inner: Adapter) -> None:
        self._inner = inner
        self.ended_in_dialect = False

    async def complete(self, call: ProviderCall) -> Completion:
        return await self._inner.complete(call)

    async def stream(self, call: ProviderCall) -> AsyncIterator[StreamEvent]:
        events = self._inner.stream(call)
        try:
            async for event in events:
                yield event
                if event.payload is None:
                    continue
                failure = relayed_failure(call.op, event.payload, call.provider_name, call.api_key)
                if failure is not None:  # the client has it: the stream ends here
                    self.ended_in_dialect = True
                    raise failure
        finally:
            close = getattr(events, "aclose", None)
            if close is not None:  # closes the provider's response now, not at garbage time
                await close()

    async def close(self) -> None:
        """The inner adapter belongs to the registry, which closes it."""
