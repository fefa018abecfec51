"""The model-proxy's side of the client dialects (OpenAI Responses, Anthropic Messages).

Routing, keys, limits, queues, accounting, metrics and traces treat a Responses or Messages
request like any other (the edge and the head read ``model`` and ``stream``; a head reads what
only a native deployment can serve when the route mixes both kinds:
:mod:`switchyard.dialects.native_only`); only the provider call differs. :func:`plan` picks
it: a provider that speaks the dialect natively (:data:`NATIVE`) gets the request passed
through (:mod:`.providers.passthrough`, its stream relayed by
:class:`~.providers.native_stream.Relayed`); any other gets it translated to chat completions
and its answer translated back by :class:`Translated`, an adapter wrapped around the
provider's usual one, so the handler calls every provider the same way (its errors naming a
field of the chat request name the client's own: :mod:`switchyard.dialects.chat_fields`, the
translation run again, noting, only then: :func:`fields_of`). The
translated output limit is named as the provider's kind reads it (:data:`MAX_TOKENS_KINDS`).
Anthropic's token count (``count_tokens``) goes to Anthropic and OpenAI's (``input_tokens``) to
OpenAI; both are estimated locally for every other provider (:mod:`.providers.token_estimate`).
A native
Responses request naming a ``previous_response_id`` is forwarded only for the key that created
that response (:mod:`.response_owners`); without an owner store it is refused. A translated
Responses request's ``item_reference`` items are filled in from the items kept of earlier
translated answers (:func:`resolve_references`, :mod:`.response_items`), and the answer's own
items are kept unless the request says ``store: false`` (``keep``).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec

from switchyard.bus.envelope import Envelope
from switchyard.dialects import anthropic, responses
from switchyard.dialects.anthropic.unsigned import unsigned_thinking_dropped
from switchyard.dialects.chat_fields import ChatFields, told_for_client
from switchyard.dialects.native_only import DIALECT_OF, NATIVE, serves
from switchyard.dialects.probes import COUNTS, background_refused
from switchyard.errors import ApiError
from switchyard.schemas.openai import Usage
from switchyard.schemas.routing import LITELLM_KINDS
from switchyard.workers.modelproxy import estimate
from switchyard.workers.modelproxy.providers.base import (
    Adapter,
    Completion,
    ProviderCall,
    StreamEvent,
)
from switchyard.workers.modelproxy.providers.chunk_content import has_content
from switchyard.workers.modelproxy.providers.native_stream import Relayed
from switchyard.workers.modelproxy.providers.registry import Adapters
from switchyard.workers.modelproxy.response_items import ResponseItems
from switchyard.workers.modelproxy.response_owners import Owned, ResponseOwners, refuse_unbound

DIALECTS = frozenset({"responses", "messages"})
# Provider kinds whose servers read a chat request's output limit as ``max_tokens`` only: the
# translations write ``max_completion_tokens``, which OpenAI and Azure want (their o-series
# models refuse ``max_tokens``), and these servers ignore an unknown field, i.e. would generate
# without a limit. vLLM reads both, ``max_tokens`` in every version.
MAX_TOKENS_KINDS = frozenset({"ollama", "openai-compatible", "vllm", "together"})
# The largest request (bytes) translated again to name the fields a provider's error names
# (:func:`fields_of`); a larger one's are named by its top-level fields alone.
MAX_NOTED = 1 << 20
# Told a translated Responses answer's output items, to keep them for later references.
Keep = Callable[[list[dict[str, Any]]], None]


async def resolve_references(call: ProviderCall, items: ResponseItems, tenant: str) -> ProviderCall:
    """``call`` with its ``item_reference`` items filled in from ``tenant``'s kept items. A
    native deployment gets those this store holds filled in and the others passed on (its
    provider holds the items of answers it made): a head sends every request with references
    to a native deployment when its route has one, so a conversation begun on a translating
    deployment (a self-hosted model with OpenAI as its fallback) goes on there.

    Raises:
        NotFound: a referenced item is not ``tenant``'s or not stored (OpenAI's 404;
            translating deployments only).
        ServiceUnavailable: the items cannot be read.
    """
    if DIALECT_OF.get(call.op) != "responses":
        return call
    return await items.resolve(call, tenant, pass_unknown=serves(call.op, call.provider.kind))


def plan(
    call: ProviderCall,
    adapters: Adapters,
    owners: ResponseOwners | None = None,
    sent: Envelope | None = None,
    keep: Keep | None = None,
) -> tuple[Adapter, ProviderCall]:
    """The adapter and the call for ``call``'s provider (translating when it must).

    ``sent`` is the request's envelope: its id goes with the call (for the provider's logs),
    and ``owners`` and its ``key_id`` (the caller's key; ``key_hash`` for answers recorded
    before) bind native Responses answers to the key that asked for them
    (:mod:`.response_owners`); ``keep`` is told a translated Responses answer's output items
    unless the request says ``store: false`` (the Response then echoes ``store: true``).

    Raises:
        InvalidRequest: the request uses something the translation cannot carry (the error
            names the field), or is malformed; or names a previous response on a native
            deployment while no ``owners`` can check it.
    """
    key = (sent.key_id, sent.key_hash) if sent is not None else ("", "")
    if sent is not None and sent.request_id:
        call = dataclasses.replace(call, request_id=sent.request_id)
    kind = call.provider.kind
    if call.op in COUNTS:  # a native provider counts its own; every other count is estimated
        if kind in NATIVE[COUNTS[call.op]]:
            return _native(call, adapters, owners, key), call
        if kind == "demo":  # counts as it bills: words
            return adapters.for_kind(kind), call
        return adapters.token_estimate(), call
    if call.op not in DIALECTS:
        return adapters.for_kind(kind), call
    if kind in NATIVE[call.op]:
        if call.op == "responses" and call.body.get("background"):
            # The HTTP edges refuse it; a caller on the bus reaches this without them, and
            # OpenAI would keep the answer where nobody can read it.
            raise background_refused()
        if call.op == "messages":  # a translating deployment's thinking, unsigned: dropped
            body = unsigned_thinking_dropped(call.body)
            if body is not call.body:
                call = dataclasses.replace(call, body=dict(body))
        native = _native(call, adapters, owners, key)
        return (Relayed(native) if call.stream else native), call
    context: responses.ResponsesContext | anthropic.MessagesContext
    chat: dict[str, Any]
    if call.op == "responses":
        translated = responses.to_chat(call.body)
        chat, context = translated.chat, translated.context
        if keep is not None and call.body.get("store") is not False:
            context = msgspec.structs.replace(context, echo={**context.echo, "store": True})
        else:
            keep = None
    else:
        message = anthropic.to_chat(call.body)
        chat, context = message.chat, message.context
    chat["model"] = call.deployment.model
    if kind in MAX_TOKENS_KINDS and "max_completion_tokens" in chat:
        chat["max_tokens"] = chat.pop("max_completion_tokens")
    # The translation needs the usage chunk of a stream to close the dialect's own usage.
    chat_call = dataclasses.replace(call, op="chat", body=chat, client_wants_usage=True)
    top_fields = responses.TOP_FIELDS if call.op == "responses" else anthropic.TOP_FIELDS
    lead = "instructions" if call.op == "responses" else "system"
    top = ChatFields.top(top_fields, chat, lead if call.body.get(lead) else None)
    inner = adapters.for_kind(kind)
    numbered = kind not in LITELLM_KINDS
    adapter = Translated(inner, context, keep, fields_of(call, top), top, numbered=numbered)
    return adapter, chat_call


def fields_of(call: ProviderCall, top: ChatFields | None = None) -> Callable[[], ChatFields]:
    """How to learn where each field of ``call``'s translated chat request came from, asked
    only when a provider's error names one that ``top`` (its top-level fields) cannot answer:
    the translation run again, noting (nothing is noted, nor kept, while a request is
    translated and answered). From the request's bytes, which the call holds anyway
    (``call.request``, decoded as ``call.body`` was), unless its ``item_reference`` items were
    filled in: then from the body itself. A request over :data:`MAX_NOTED` bytes is not
    translated again (on the event loop, 70-180 ms for 4 MB, once per deployment tried):
    ``top`` answers, coarsely (``messages[3].content`` is ``input``, or ``messages``)."""
    raw = call.request
    if top is not None and len(raw) > MAX_NOTED:
        return functools.partial(_same, top)
    noting = responses.chat_fields if call.op == "responses" else anthropic.chat_fields
    if not raw or (call.op == "responses" and b"item_reference" in raw):
        return functools.partial(noting, call.body)
    return functools.partial(noting, raw)


def _same(fields: ChatFields) -> ChatFields:
    return fields


def _native(
    call: ProviderCall, adapters: Adapters, owners: ResponseOwners | None, key: tuple[str, str]
) -> Adapter:
    """The passthrough; for OpenAI's Responses API (and its token count, which takes a
    ``previous_response_id`` too), one that checks and records whose responses are whose."""
    if call.op not in ("responses", "input_tokens"):
        return adapters.passthrough()
    if owners is None:
        refuse_unbound(call)
        return adapters.passthrough()
    return Owned(adapters.passthrough(), owners, *key)


class Translated:
    """A chat-completions adapter answering in a client dialect. A provider's error naming a
    field of the chat request (``param``) is told naming the client's own field (``fields``:
    :mod:`switchyard.dialects.chat_fields`)."""

    def __init__(
        self,
        inner: Adapter,
        context: responses.ResponsesContext | anthropic.MessagesContext,
        keep: Keep | None = None,
        fields: Callable[[], ChatFields] | None = None,
        top: ChatFields | None = None,
        *,
        numbered: bool = True,
    ) -> None:
        self._inner = inner
        # The provider's paths count the chat request's messages (litellm's own formats do
        # not: :func:`~switchyard.dialects.chat_fields.told_for_client`).
        self._numbered = numbered
        self._context = context
        self._keep = keep  # told a Responses answer's output items (not waited for)
        self._noting = fields  # (see :func:`fields_of`)
        self._top = top  # the request's top-level fields alone
        # The stream failed after it started and its dialect's own error ending was sent: the
        # handler's error message then says so (``Sy-Error-In-Stream``), so no relay adds one.
        self.ended_in_dialect = False

    async def complete(self, call: ProviderCall) -> Completion:
        try:
            done = await self._inner.complete(call)
        except ApiError as exc:
            told_for_client(exc, self._fields, self._top, numbered=self._numbered)
            raise
        usage = done.usage
        if usage is None:  # shown and billed: Switchyard's estimate of the chat answer
            usage = estimate.estimated(call.request, estimate.answer_tokens("chat", done.body))
        if isinstance(self._context, responses.ResponsesContext):
            answer = responses.response_dict(done.body, self._context, estimate=usage)
            if self._keep is not None:
                self._keep(answer["output"])
            return Completion(msgspec.json.encode(answer), usage)
        return Completion(anthropic.to_message(done.body, self._context, estimate=usage), usage)

    async def stream(self, call: ProviderCall) -> AsyncIterator[StreamEvent]:
        out: responses.ResponsesStream | anthropic.MessagesStream
        if isinstance(self._context, responses.ResponsesContext):
            out = responses.ResponsesStream(self._context)
        else:
            # message_start shows the prompt's estimate; message_delta the provider's count.
            out = anthropic.MessagesStream(
                self._context, input_tokens=estimate.prompt_tokens(call.request)
            )
        sent = 0  # events with frames: the chunks the handler sends and counts
        reported: Usage | None = None  # the provider's count, however it came
        # Frames of the provider's opening chunks (a role alone): sent with its first content,
        # so a failure before it is still one before content (rerouted; see .stream_watch),
        # and an empty event says the provider began.
        held, opened = b"", False
        try:
            async for event in self._inner.stream(call):
                frames = b""
                if event.payload is not None:
                    frames = out.feed(event.payload)
                    if not opened:
                        opened = has_content(event.payload)
                        held, frames = (b"", held + frames) if opened else (held + frames, b"")
                if not opened and event.usage is None and not frames:
                    yield StreamEvent(None)  # held, here or within: the provider began
                    continue
                if frames:
                    sent += 1
                if event.usage is not None:
                    reported = event.usage
                if frames or event.usage is not None:
                    yield StreamEvent(frames or None, event.usage)
        except ApiError as exc:
            told_for_client(exc, self._fields, self._top, numbered=self._numbered)
            if sent:  # the client already has part of the answer: close it in its dialect
                self.ended_in_dialect = True
                yield StreamEvent(out.fail(exc), out.usage)
            raise
        usage = out.usage or reported
        if usage is None:  # shown and billed: what the provider's chunks generated, as a
            # whole answer counts it (a chunk a token billed 3 for a one-chunk answer of 8 KiB)
            usage = estimate.estimated(call.request, estimate.tokens(out.generated))
        closing = held + out.finish(usage)  # (held: a stream without any content)
        if self._keep is not None and isinstance(out, responses.ResponsesStream):
            self._keep(out.output)
        yield StreamEvent(closing or None, usage)

    def _fields(self) -> ChatFields:
        """Where the chat request's fields came from (:func:`fields_of`); none known when the
        translation, run again, fails (it cannot, having succeeded once)."""
        try:
            return self._noting() if self._noting is not None else ChatFields()
        except ApiError:
            return ChatFields()

    async def close(self) -> None:
        """The inner adapter belongs to the registry, which closes it."""


def ended_in_dialect(adapter: Adapter | None) -> bool:
    """Whether ``adapter``'s stream already told its client of its failure, in the client's
    own dialect (an ``error`` event, and Responses' ``response.failed``): a translated stream
    closing itself, or a native one relaying its provider's."""
    return isinstance(adapter, Translated | Relayed) and adapter.ended_in_dialect
