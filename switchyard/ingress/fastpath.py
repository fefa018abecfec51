"""The LLM routes as raw ASGI: the hot path of every request, with nothing in between.

Profiling the edge showed two thirds of its CPU in the web framework (middleware layers, request
and response objects) and one third in Switchyard. So ``POST /v1/chat/completions``,
``/v1/completions`` and ``/v1/embeddings`` are answered here directly from the ASGI scope; every
other path (models, health, docs, management) goes to the FastAPI app unchanged.

Per request: read the body once (413 past the limit, checked on Content-Length first),
authenticate against the local key ring (401), decode once into a probe (400), stamp the
envelope, send it on ``llm.v1.*`` and turn the replies into JSON or server-sent events. A stream
commits its status when the first content arrives (:mod:`.stream_relay`; or once it is
``ingress.stream_start_s`` late), so an error before it is a proper HTTP error; one after it
ends the stream with an error event. Every request waiting
for its answer is listed in the edge's :class:`~switchyard.ingress.departure.Waiting`, so an
edge that stops can answer the ones its grace period did not see through (503
``edge_stopping``); one still being read or admitted then gets that 503 as it starts waiting.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from switchyard.bus import subjects
from switchyard.bus.envelope import Envelope, beta_features, trace_context
from switchyard.bus.headers import http_retry_after
from switchyard.bus.replies import Reply, ReplyKind, error_from_reply
from switchyard.dialects import anthropic
from switchyard.dialects.probes import (
    COUNTS,
    CountTokensProbe,
    InputTokensProbe,
    MessagesProbe,
    ResponsesProbe,
    probe_count_tokens,
    probe_input_tokens,
    probe_messages,
    probe_responses,
)
from switchyard.errors import ApiError, InvalidRequest, PayloadTooLarge, ServiceUnavailable
from switchyard.ingress.departure import CLIENT_CLOSED, ClientGone, Departure, Stoppable
from switchyard.ingress.edge import (
    SAFE_ID,
    Edge,
    FinalReply,
    presented_key,
    stream_error,
)
from switchyard.ingress.edge_span import edge_span, refused_span
from switchyard.ingress.estimate import request_estimate
from switchyard.ingress.onewrite import send_last, send_whole
from switchyard.ingress.stream_relay import SSE_HEADERS, answered_by, relay_stream
from switchyard.ingress.timeouts import (
    deadline_header,
    first_chunk_wait,
    naming_the_limit,
)
from switchyard.limits.limiter import Ticket
from switchyard.runtime import semconv as sc
from switchyard.runtime.http import SHOULD_NOT_RETRY
from switchyard.runtime.tracing import NO_HOP, Hop
from switchyard.schemas.keys import ClientKey
from switchyard.schemas.openai import (
    ChatProbe,
    CompletionProbe,
    EmbeddingProbe,
    Usage,
    error_body,
    openai_status,
    probe,
)
from switchyard.schemas.scheduling import RANK
from switchyard.telemetry import request_id_var

log = logging.getLogger("switchyard.ingress")

Probe = (
    ChatProbe
    | CompletionProbe
    | EmbeddingProbe
    | ResponsesProbe
    | MessagesProbe
    | CountTokensProbe
    | InputTokensProbe
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ROUTES: dict[str, tuple[str, str]] = {}
for _prefix in ("/v1", ""):
    ROUTES[f"{_prefix}/chat/completions"] = ("chat", subjects.CHAT)
    ROUTES[f"{_prefix}/completions"] = ("complete", subjects.COMPLETE)
    ROUTES[f"{_prefix}/embeddings"] = ("embed", subjects.EMBED)
    ROUTES[f"{_prefix}/responses"] = ("responses", subjects.RESPONSES)
    ROUTES[f"{_prefix}/responses/input_tokens"] = ("input_tokens", subjects.INPUT_TOKENS)
    ROUTES[f"{_prefix}/messages"] = ("messages", subjects.MESSAGES)
    ROUTES[f"{_prefix}/messages/count_tokens"] = ("count_tokens", subjects.COUNT_TOKENS)
# Routes of Anthropic's API: their errors go out in Anthropic's shape.
ANTHROPIC_OPS = frozenset({"messages", "count_tokens"})

_JSON = [(b"content-type", b"application/json")]
PRIORITY_HEADER = b"x-switchyard-priority"  # interactive | default | batch (Sy-Priority)
BETA_HEADER = b"anthropic-beta"  # Anthropic's beta features (Sy-Anthropic-Beta), passed on
_WANTED = frozenset(
    {
        b"authorization",
        b"api-key",
        b"x-api-key",
        b"content-length",
        b"content-encoding",
        b"x-request-id",
        b"x-request-timeout",
        b"x-stainless-timeout",
        b"x-stainless-read-timeout",
        b"traceparent",
        b"tracestate",
        PRIORITY_HEADER,
        BETA_HEADER,
    }
)


_ANTHROPIC_VERSION = anthropic.VERSION_HEADER.encode()


class FastPath:
    """ASGI entry point: LLM POSTs here, everything else to ``app``."""

    def __init__(self, edge: Edge, app: ASGIApp) -> None:
        self.edge = edge
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            route = ROUTES.get(scope["path"])
            if route is not None:
                await self._llm(route[0], route[1], scope, receive, send)
                return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self._other(scope, receive, send)

    async def _other(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Every other HTTP request, to the app: it gets a request id too (its answer's
        ``x-request-id``, its log lines'), and its status is counted by route."""
        stats = self.edge.stats
        given = next((v for k, v in scope["headers"] if k.lower() == b"x-request-id"), b"")
        request_id = _request_id(self.edge, given.decode("latin-1"))
        id_header = (b"x-request-id", request_id.encode())
        status = 500
        sent = {"started": False, "complete": False}

        async def answering(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers") or ())
                if not any(name.lower() == b"x-request-id" for name, _ in headers):
                    message = {**message, "headers": [*headers, id_header]}
            await send(message)
            sent["started"] = True
            sent["complete"] = message["type"] == "http.response.body" and not message.get(
                "more_body"
            )

        token = request_id_var.set(request_id)
        try:
            stoppable = Stoppable(self.edge.waiting)
            try:
                async with stoppable:
                    await self.app(scope, receive, answering)
            except ServiceUnavailable as exc:
                if not stoppable.stopping:
                    raise  # (not raised by the app: its own errors are answered in it)
                status = await _stopped(send, exc, scope, request_id, sent) or status
        finally:
            request_id_var.reset(token)
            if stats is not None:
                # The route template (``/admin/v1/keys/{key_id}``), never the raw path: bounded.
                # An LLM route's 405 (a GET) comes from no route object: it is its own path.
                template = getattr(scope.get("route"), "path", None) or (
                    scope["path"] if scope["path"] in ROUTES else sc.OTHER
                )
                stats.http(template, scope["method"], status)

    async def _llm(self, op: str, subject: str, scope: Scope, receive: Receive, send: Send) -> None:
        wanted = _wanted(scope["headers"])
        edge = self.edge
        request_id = _request_id(edge, wanted.get(b"x-request-id", b"").decode("latin-1"))
        token = request_id_var.set(request_id)
        state = {"started": False}
        call = _Call(op, scope["path"])
        try:
            key = await edge.authenticate(_api_key(wanted), scope)
            if b"content-encoding" in wanted:
                _plain_body(wanted[b"content-encoding"])
            body = await _read_body(receive, wanted.get(b"content-length"), edge.body_limit)
            parsed = _probe(op, body)
            call.model = parsed.model
            edge.check_model(key, parsed.model)
            if edge.limiter is not None:
                # The prompt and the answer's cap (ingress/estimate.py), corrected after the
                # answer; only a key with tpm counts tokens, and counts use none.
                estimate, prompt = request_estimate(body, parsed, 0 if op in COUNTS else key.tpm)
                # The alias its usage is billed under (a budget holds its cost; counts: none).
                alias = "" if op in COUNTS else parsed.model
                call.ticket = await edge.limiter.admit(
                    key, request_id, estimate, alias, prompt=prompt
                )
            limit_headers = call.ticket.headers if call.ticket is not None else []
            streamed = not isinstance(parsed, EmbeddingProbe) and bool(parsed.stream)
            env = _envelope(edge, request_id, key, wanted, streamed=streamed)
            # Named only in a 504 of the deadline: worked out then, not for every request.
            call.deadline_limit = partial(edge.deadline_limit, wanted, streamed=streamed)
            if edge.tracing.enabled:
                call.hop = _trace(edge, env, op, call.model, call.route)
                env = env.with_(traceparent=call.hop.traceparent)
            client = edge.require_client()
            async with Departure(receive, edge.tasks, edge.waiting, key.id) as departure:
                if streamed:
                    # aclosing: however the relay ends (client gone, error), the reply inbox
                    # is released here rather than when the garbage collector gets to it.
                    replies = client.exchange(subject, body, env, on_overflow=departure.fell_behind)
                    async with contextlib.aclosing(replies):
                        await relay_stream(
                            replies,
                            headers=[*SSE_HEADERS, *_id_headers(request_id, op), *limit_headers],
                            departure=departure,
                            send=send,
                            state=state,
                            final=call.final,
                            dialect=op,
                            first_within=first_chunk_wait(wanted),
                            early_s=edge.stream_start_s,
                        )
                    return
                call.final.reply = await _whole(client.exchange(subject, body, env), call.final)
            await _answer(send, call.final.reply, request_id, limit_headers, op)
        except ApiError as exc:
            await _refuse(send, call, exc, request_id, started=state["started"])
        except ClientGone:
            call.left = True  # counted as a client that left (metrics), streamed or not
            if not state["started"]:  # a stream that began keeps the status it was sent with
                call.status = CLIENT_CLOSED
        except Exception:  # the edge's error boundary: answer 500 in OpenAI shape, keep serving
            log.exception("unhandled error serving %s", scope["path"])
            call.failure = ApiError("internal error in the gateway")
            if not state["started"]:
                call.status = 500
                await _respond_error(send, call.failure, request_id, op)
        finally:
            call.finish(edge, wanted, request_id)
            request_id_var.reset(token)


@dataclass(slots=True)
class _Call:
    """One LLM request at the edge: what the metrics, the span and the limiter learn at its end.

    ``status`` is the HTTP status sent; ``failure`` the error answered, or that ended a stream
    after it started (its own, or ``final.failure`` from the replies); ``left``: the client
    left before its answer ended."""

    op: str
    route: str
    began: float = field(default_factory=time.perf_counter)
    arrived: float = field(default_factory=time.time)  # the span's start, if one is late
    model: str = ""
    status: int = 200
    failure: ApiError | None = None
    left: bool = False
    hop: Hop = NO_HOP
    ticket: Ticket | None = None
    final: FinalReply = field(default_factory=FinalReply)
    # What set its deadline, named in its 504 (timeouts.deadline_limit): called only then.
    deadline_limit: Callable[[], str] | None = None

    def finish(self, edge: Edge, headers: dict[bytes, bytes], request_id: str) -> None:
        final = self.final
        failure = self.failure if self.failure is not None else final.failure
        if self.ticket is not None and edge.limiter is not None:
            edge.limiter.settle(self.ticket, final.total_tokens)
        if self.hop.span is None and edge.tracing.enabled:  # answered before its span began
            self.hop = refused_span(
                edge.tracing,
                headers,
                op=self.op,
                model=self.model,
                route=self.route,
                request_id=request_id,
                arrived=self.arrived,
            )
        if self.hop.span is not None:
            self.hop.end(failure, status=self.status)
        if edge.stats is not None:
            refusal = final.refusal  # names a deployment when one took the request
            edge.stats.llm(
                self.route,
                self.op,
                self.model,
                status=self.status,
                seconds=time.perf_counter() - self.began,
                error=failure,
                left=self.left,
                served=bool(final.first_at or (refusal is not None and refusal.deployment)),
                ttft=final.first_at - self.began if final.first_at else None,
                usage=_counted(final.reply),
            )


def _counted(reply: Reply | None) -> Usage | None:
    """The provider's count of a request's tokens, if its final carried one: an estimate of
    Switchyard's (``Sy-Usage-Estimated``, a provider that reported none) is no count to time
    its output tokens by (the per-token histogram)."""
    if reply is None or reply.usage_estimated:
        return None
    return reply.usage


def _probe(op: str, body: bytes) -> Probe:
    """Validate the body for ``op`` (the model and stream flag routing needs).

    Raises:
        InvalidRequest: 400 naming the field.
    """
    if op == "responses":
        return probe_responses(body)
    if op == "messages":
        return probe_messages(body)
    if op == "count_tokens":
        return probe_count_tokens(body)
    if op == "input_tokens":
        return probe_input_tokens(body)
    return probe(op, body)


def _envelope(
    edge: Edge, request_id: str, key: ClientKey, wanted: dict[bytes, bytes], *, streamed: bool
) -> Envelope:
    """What the request carries onto the bus: who, until when, and the client's trace.

    Until when: see :func:`~switchyard.ingress.timeouts.deadline_header` (a stream's SDK
    timeout bounds its first chunk only: :func:`~switchyard.ingress.timeouts.first_reply`).
    """
    trace, trace_state = trace_context(
        wanted.get(b"traceparent", b"").decode("latin-1"),
        wanted.get(b"tracestate", b"").decode("latin-1"),
    )
    priority = wanted.get(PRIORITY_HEADER, b"").decode("latin-1").strip().lower()
    if priority and priority not in RANK:
        raise InvalidRequest(
            "x-switchyard-priority must be interactive, default or batch",
            param="x-switchyard-priority",
            code="invalid_header",
        )
    beta = wanted.get(BETA_HEADER)
    return Envelope(
        request_id=request_id,
        priority=priority,
        beta=beta_features(beta.decode("latin-1"), "anthropic-beta") if beta else "",
        deadline=edge.deadline(deadline_header(wanted, streamed=streamed)),
        key_id=key.id,
        key_hash=key.hash,
        tenant=key.team,
        traceparent=trace,
        tracestate=trace_state,
        parts_max=edge.parts_max,
    )


def _trace(edge: Edge, env: Envelope, op: str, model: str, route: str) -> Hop:
    """The edge's span: a child of the client's trace context, if it sent one."""
    return edge_span(
        edge.tracing,
        op=op,
        model=model,
        route=route,
        request_id=env.request_id,
        traceparent=env.traceparent,
        tracestate=env.tracestate,
    )


def _request_id(edge: Edge, given: str) -> str:
    """The request id is also the billing identity (each id is billed once, so a failover
    re-send is not billed twice): the edge always makes it unique, led by the client's own
    ``X-Request-Id`` (for correlation) when it sent a usable one."""
    unique = edge.new_request_id()
    return f"{given}.{unique}" if given and SAFE_ID.fullmatch(given) else unique


def _wanted(headers: list[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    """The request headers the edge reads. ``anthropic-beta`` may be sent as several lines (an
    SDK's own betas plus the caller's): they are one comma-separated list (RFC 9110 5.3), so
    all are kept, not the last."""
    wanted = {k: v for k, v in headers if k in _WANTED}
    if BETA_HEADER in wanted:
        wanted[BETA_HEADER] = b", ".join(v for k, v in headers if k == BETA_HEADER)
    return wanted


def _api_key(headers: dict[bytes, bytes]) -> str | None:
    def get(name: bytes) -> str | None:
        raw = headers.get(name)
        return raw.decode("latin-1") if raw else None

    return presented_key(get(b"authorization"), get(b"api-key"), get(b"x-api-key"))


def _plain_body(encoding: bytes) -> None:
    """A compressed body would be read as bad JSON ("invalid character (byte 0)"): say what
    is wrong instead, with HTTP's status for it."""
    if encoding.strip().lower() not in (b"", b"identity"):
        raise ApiError(
            f"Content-Encoding `{encoding.decode('latin-1')[:40]}` is not supported: send the "
            "request body uncompressed",
            status=415,
            type="invalid_request_error",
            code="unsupported_content_encoding",
        )


async def _read_body(receive: Receive, length: bytes | None, limit: int) -> bytes:
    if length is not None and length.isdigit() and int(length) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body"):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")


async def _answer(
    send: Send,
    reply: Reply,
    request_id: str,
    limit_headers: list[tuple[bytes, bytes]],
    op: str,
) -> None:
    extra = [*_id_headers(request_id, op), *limit_headers, *answered_by(reply)]
    await _respond(send, 200, reply.body, _JSON + extra)


def _id_headers(request_id: str, op: str) -> list[tuple[bytes, bytes]]:
    """The request's id: ``x-request-id``, and ``request-id`` too for Anthropic's SDKs, which
    read that one (``message._request_id``, and in their error messages)."""
    value = request_id.encode()
    if op in ANTHROPIC_OPS:
        return [(b"x-request-id", value), (b"request-id", value)]
    return [(b"x-request-id", value)]


async def _respond(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    await send_whole(
        send,
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        },
        {"type": "http.response.body", "body": body},
    )


async def _respond_error(
    send: Send, exc: ApiError, request_id: str, op: str = "chat", refusal: Reply | None = None
) -> None:
    """``exc`` as the HTTP answer, in the route's dialect; ``refusal``, the error message it
    came from, names the deployment that refused (absent when none did: the edge's own
    errors, or a head that found no deployment)."""
    headers = [*_JSON, *_id_headers(request_id, op), *exc.headers]
    if refusal is not None:
        headers += answered_by(refusal)
    if exc.retry_after is not None:
        headers.append((b"retry-after", http_retry_after(exc.retry_after).encode()))
    if exc.no_retry:  # the SDKs would retry a 429 (or a 5xx) that can never succeed
        headers.append(SHOULD_NOT_RETRY)
    # Anthropic's SDKs read errors in Anthropic's shape; every other route speaks OpenAI's.
    status = exc.status
    if op in ANTHROPIC_OPS:
        body = anthropic.error_body(exc, request_id=request_id)
    else:
        body = error_body(exc)
        status = openai_status(status)
    await _respond(send, status, body, headers)


async def _stopped(
    send: Send, exc: ApiError, scope: Scope, request_id: str, sent: dict[str, bool]
) -> int | None:
    """Answer a request of the other routes its edge stopped serving: 503 ``edge_stopping`` in
    OpenAI's shape, or Anthropic's for an Anthropic client (as the app's own errors); the end
    of a response that had started (an admin page's event stream: its browser reconnects).
    The status answered, if one was."""
    if sent["complete"]:
        return None
    if sent["started"]:
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return None
    anthropic_client = any(k.lower() == _ANTHROPIC_VERSION for k, _ in scope["headers"]) or any(
        scope["path"] == route or scope["path"].startswith(route + "/")
        for route, (op, _) in ROUTES.items()
        if op in ANTHROPIC_OPS
    )
    await _respond_error(send, exc, request_id, "messages" if anthropic_client else "chat")
    return exc.status


async def _whole(replies: AsyncGenerator[Reply, None], final: FinalReply) -> Reply:
    """The final message of a non-streamed request (as :meth:`LLMClient.request`, which it
    replaces here to keep the error message: ``final.refusal`` gets it).

    Raises:
        ApiError: the error the workers replied with, or any error of the exchange.
    """
    async with contextlib.aclosing(replies):  # the reply inbox is released on every way out
        async for reply in replies:
            if reply.kind is ReplyKind.FINAL:
                return reply
            if reply.kind is ReplyKind.ERROR:
                final.refusal = reply
                raise error_from_reply(reply)
    raise ServiceUnavailable("the reply ended without an answer", code="no_answer")


async def _refuse(
    send: Send, call: _Call, exc: ApiError, request_id: str, *, started: bool
) -> None:
    """Answer ``exc``: as the HTTP error, or, once a stream started (an edge that stopped
    relaying it), as the stream's last event in its dialect rather than a cut connection."""
    exc = naming_the_limit(exc, call.deadline_limit)
    call.failure = exc
    if not started:  # the status the client is answered (metrics, spans)
        call.status = exc.status if call.op in ANTHROPIC_OPS else openai_status(exc.status)
        await _respond_error(send, exc, request_id, call.op, call.final.refusal)
        return
    # Written at once even to a client that stopped reading (``reader_too_slow``): it reads
    # the event after what it has yet to read, or the write timeout drops it.
    await send_last(send, stream_error(exc, call.op, call.final, call.model))
