"""State and non-hot endpoints shared by tail and gateway: key ring, bus client, models, health.

The LLM POST routes themselves live in :mod:`switchyard.ingress.fastpath` (raw ASGI); this
module holds what they share with the FastAPI endpoints: authentication against the local key
ring, deadlines, request ids, and the SSE framing of reply streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from switchyard.bus import headers as h
from switchyard.bus import subjects
from switchyard.bus.envelope import Deadline
from switchyard.bus.replies import Reply, ReplyKind, error_from_reply
from switchyard.client import LLMClient
from switchyard.config import Settings
from switchyard.dialects import anthropic
from switchyard.dialects.responses.failed import stream_failed
from switchyard.errors import (
    ApiError,
    AuthenticationFailed,
    ModelNotFound,
    PermissionDenied,
    ServiceUnavailable,
)
from switchyard.ingress.departure import Waiting
from switchyard.ingress.guard import UNKNOWN_KEY, FailedAuthGuard
from switchyard.ingress.keyring import KeyRing, not_bearer
from switchyard.ingress.metrics import EdgeMetrics
from switchyard.ingress.responses import (
    JSON,
    SSE_DONE,
    SSE_KEEPALIVE,
    dialect_error,
    sse,
    sse_error,
)
from switchyard.ingress.timeouts import deadline_limit
from switchyard.limits.limiter import Limiter
from switchyard.runtime.client_address import TrustedProxies
from switchyard.runtime.tasks import TaskSupervisor
from switchyard.runtime.tracing import OFF, Tracing
from switchyard.schemas.keys import ClientKey
from switchyard.telemetry import request_id_var

SAFE_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")  # used with fullmatch
_MODELS = msgspec.json.Decoder(dict[str, Any])
_ENCODE = msgspec.json.Encoder()
# Readiness (see Edge.ready): a new question every READY_EVERY_S, each to a head picked anew,
# none given up, until one is answered or READY_WITHIN_S (under a 3 s probe timeout) passes.
READY_EVERY_S = 0.25
READY_WITHIN_S = 2.5


class Edge:
    """What an edge process holds; ``client`` and ``keys`` are attached at startup."""

    def __init__(self, settings: Settings) -> None:
        self.client: LLMClient | None = None
        self.keys: KeyRing | None = None
        self.limiter: Limiter | None = None
        self.stats: EdgeMetrics | None = None
        self.tracing: Tracing = OFF
        self._max_body = settings.ingress.max_body_bytes
        # Sy-Parts-Max on every request: whole answers past one message come in parts.
        self.parts_max = str(settings.ingress.max_answer_bytes or "")
        self.stream_start_s = settings.ingress.stream_start_s
        self.auth_failures = FailedAuthGuard(
            settings.ingress.failed_auth_limit, settings.ingress.failed_auth_window_s
        )
        self.proxies = TrustedProxies(
            settings.ingress.trusted_proxies, settings.ingress.forwarded_header
        )
        self._default_s = settings.ingress.default_deadline_s
        self._max_s = settings.ingress.max_deadline_s
        self._fallback_ids = 0
        # Per-request helpers (a streaming client's disconnect watcher): owned, never leaked.
        self.tasks = TaskSupervisor("edge")
        # The LLM requests waiting for their answers: a stopping edge answers them 503.
        self.waiting = Waiting()

    # ---- shared helpers ----

    @property
    def body_limit(self) -> int:
        """The largest request body taken (413 past it): ``ingress.max_body_bytes``, or less
        when the NATS server this edge is connected to carries less in one message (its
        ``max_payload`` less room for the headers); sending more failed as a bare 500."""
        room = self.client.payload_room if self.client is not None else 0
        return min(self._max_body, room) if room else self._max_body

    def bus_ceiling_note(self) -> str | None:
        """What to log at start when ``ingress.max_body_bytes`` is more than the bus
        carries; None when it is not."""
        limit = self.body_limit
        if limit >= self._max_body:
            return None
        return (
            f"ingress.max_body_bytes is {self._max_body} but the NATS server carries at most "
            f"{limit} bytes of body in one message (its max_payload less 16 KiB for headers): "
            f"larger requests are refused with 413; raise the server's max_payload or lower "
            f"the setting (docs/operations.md, Body size)"
        )

    def require_client(self) -> LLMClient:
        if self.client is None:
            raise ServiceUnavailable("the gateway is starting", code="starting")
        return self.client

    async def authenticate(
        self, api_key: str | None, scope: Mapping[str, Any] | None = None
    ) -> ClientKey:
        """Raises AuthenticationFailed (401), RateLimited (429) for a key that failed from an
        address that presented too many unknown keys (see :mod:`.guard`; a valid key from it
        passes), or ServiceUnavailable while starting or when a key the ring does not know
        cannot be read from the bucket (:meth:`KeyRing.look_up`). ``scope``: the request's
        ASGI scope, read for the client's address only when a key failed
        (:class:`~switchyard.runtime.client_address.TrustedProxies`)."""
        keys = self.keys
        if keys is None:
            raise ServiceUnavailable("the gateway is starting", code="starting")
        try:
            return keys.authenticate(api_key)
        except AuthenticationFailed as exc:
            if exc.code != UNKNOWN_KEY:  # missing, revoked, expired: the client reads why
                raise
            address = self.proxies.client(scope) if scope is not None else ""
            guard = self.auth_failures
            if guard:  # some address has failures: the only case that costs a lookup
                guard.check(address)
            if api_key and await keys.look_up(api_key):
                return keys.authenticate(api_key)  # the watch had not delivered it yet
            guard.failed(address, exc)
            raise

    @staticmethod
    def check_model(key: ClientKey, model: str) -> None:
        """Raises PermissionDenied (403) when ``key`` may not use ``model``."""
        if not key.allows(model):
            raise PermissionDenied(f"this API key may not use the model `{model}`", param="model")

    def deadline(self, raw: bytes | str | None) -> Deadline:
        """The deadline for a client-requested timeout (seconds), capped; the default when the
        client asked for none or for something that is not a positive number."""
        seconds = self._default_s
        if raw:
            try:
                value = float(raw)
            except ValueError:
                value = 0.0
            if 0 < value < float("inf"):
                seconds = min(value, self._max_s)
        return Deadline.after(seconds)

    def deadline_limit(self, wanted: dict[bytes, bytes], *, streamed: bool) -> str:
        """Which limit set the deadline of a request with headers ``wanted``, for its 504."""
        return deadline_limit(
            wanted, streamed=streamed, default_s=self._default_s, max_s=self._max_s
        )

    def new_request_id(self) -> str:
        if self.client is not None:
            return self.client.new_request_id()
        self._fallback_ids += 1
        return f"req-{time.time_ns()}-{self._fallback_ids}"

    # ---- FastAPI endpoints ----

    async def list_models(self, request: Request) -> Response:
        """The models this key may use; in Anthropic's paged shape for an Anthropic client."""
        as_anthropic = anthropic.VERSION_HEADER in request.headers
        try:
            key = await self.authenticate(_header_key(request), request.scope)
            listing = await self._models(key)
            if as_anthropic:
                ids = [m.get("id", "") for m in listing["data"]]
                return Response(anthropic.page_body(ids, request.query_params), media_type=JSON)
            return Response(_ENCODE.encode(listing), media_type=JSON)
        except ApiError as exc:
            return _error(exc, as_anthropic)

    async def get_model(self, request: Request) -> Response:
        model_id = request.path_params["model"]
        as_anthropic = anthropic.VERSION_HEADER in request.headers
        try:
            key = await self.authenticate(_header_key(request), request.scope)
            for model in (await self._models(key))["data"]:
                if model["id"] == model_id:
                    if as_anthropic:
                        return Response(anthropic.model_body(model_id), media_type=JSON)
                    return Response(_ENCODE.encode(model), media_type=JSON)
            raise ModelNotFound(
                f"The model `{model_id}` does not exist or you do not have access to it.",
                param="model",
            )
        except ApiError as exc:
            return _error(exc, as_anthropic)

    async def health(self, request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type=JSON)

    async def ready(self, request: Request) -> Response:
        """Ready when NATS is connected, the key ring loaded, and a head answers.

        A question goes to one head of the queue group, picked by NATS: with one head of two
        hung (not dead: its subscription lives on), a single try made healthy edges flap out
        of their load balancer, and tries one after another, each given up after a fraction
        of a second, still failed now and then on a busy machine (a healthy head slower than
        the try). So a new question leaves every ``READY_EVERY_S``, each to a head picked
        anew, and none is given up before ``READY_WITHIN_S``: the first answer from any head
        makes the edge ready. Ten or so questions all going to the hung head is a 1 in 1,000
        chance; a healthy head has the whole time to answer.
        """
        client = self.client
        if client is None or self.keys is None:
            return Response(b'{"status":"starting"}', status_code=503, media_type=JSON)
        if not client.connected:  # at once: no head could answer through a lost connection
            body = _ENCODE.encode(
                {"status": "not ready", "reason": "not connected to NATS (reconnecting)"}
            )
            return Response(body, status_code=503, media_type=JSON)
        failure = await _first_answer(client)
        if failure is None:
            return Response(b'{"status":"ready"}', media_type=JSON)
        body = _ENCODE.encode({"status": "not ready", "reason": failure})
        return Response(body, status_code=503, media_type=JSON)

    async def _models(self, key: ClientKey) -> dict[str, Any]:
        client = self.require_client()
        env = client.envelope()
        env = env.with_(
            key_hash=key.hash, key_id=key.id, request_id=request_id_var.get() or env.request_id
        )
        reply = await client.request(subjects.MODELS, b"{}", env)
        listing = _MODELS.decode(reply.body)
        listing["data"] = [m for m in listing.get("data", []) if key.allows(m.get("id", ""))]
        return listing


async def _first_answer(client: LLMClient) -> str | None:
    """Ask the heads for the model list until one answers (None) or ``READY_WITHIN_S`` passes
    (why no head answered). A question a head refuses for want of a key was answered."""

    async def ask() -> None:
        remaining = max(0.05, end - time.monotonic())
        # A head that wants a key for the list answered: the path works.
        with contextlib.suppress(AuthenticationFailed):
            await client.request(subjects.MODELS, b"{}", client.envelope(timeout=remaining))

    end = time.monotonic() + READY_WITHIN_S
    asked: set[asyncio.Task[None]] = set()
    failure = "no head answered"
    next_ask = 0.0
    try:
        while (now := time.monotonic()) < end:
            if now >= next_ask:  # paced: a question that fails at once (no head) waits too
                asked.add(asyncio.create_task(ask()))
                next_ask = now + READY_EVERY_S
            until = min(next_ask, end) - now
            if not asked:
                await asyncio.sleep(until)
                continue
            done, asked = await asyncio.wait(
                asked, timeout=until, return_when=asyncio.FIRST_COMPLETED
            )
            answered, unexpected = False, None
            for task in done:  # every one read: none left to log "never retrieved"
                exc = task.exception()
                if exc is None:
                    answered = True
                elif isinstance(exc, ApiError):
                    failure = exc.message
                else:
                    unexpected = exc
            if unexpected is not None:
                raise unexpected
            if answered:
                return None
        return failure
    finally:
        # Not cancelled: a cancelled exchange tells the model-proxies its caller left (a
        # stored CANCELS message per question). Each ends by its own deadline, by READY_WITHIN_S.
        for task in asked:
            task.add_done_callback(_unread)


def _unread(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()  # an unanswered question's end is not news


def presented_key(
    authorization: str | None, api_key: str | None, x_api_key: str | None
) -> str | None:
    """The client key a request presents: ``Authorization: Bearer``, else ``api-key`` (Azure
    style), else ``x-api-key``.

    Raises:
        AuthenticationFailed: none of them holds a key but ``Authorization`` holds something
            that is not a Bearer token (a bare key, another scheme): it is never taken as a
            key, and the client is told how to send it rather than that it sent nothing.
    """
    key = h.bearer_token(authorization) or api_key or x_api_key
    if key is None and authorization and authorization.strip():
        raise not_bearer(authorization)
    return key


def _error(exc: ApiError, as_anthropic: bool) -> Response:
    # an Anthropic SDK reads Anthropic's shape
    return dialect_error(exc, as_anthropic=as_anthropic)


def _header_key(request: Request) -> str | None:
    get = request.headers.get
    return presented_key(get("authorization"), get("api-key"), get("x-api-key"))


@dataclass(slots=True)
class FinalReply:
    """The final message of a request, once it arrived (its usage settles the TPM estimate;
    also the error ending a stream that failed after content, when it says what it used),
    when the first streamed content went out (``perf_counter`` time, 0 before), the error
    message it got instead of an answer, if one came (it names the deployment that refused,
    which the HTTP error answer passes on), and the error that ended a stream after it
    started, if one did (the metrics count the stream as failed with it). A Responses or
    Messages stream also keeps the first and the last chunk it relayed, once it ended: an
    error that ends it from outside the relay (the edge stopping) is numbered after them."""

    reply: Reply | None = None
    first_at: float = 0.0
    refusal: Reply | None = None
    failure: ApiError | None = None
    opening: bytes = b""
    relayed: bytes = b""

    @property
    def total_tokens(self) -> int | None:
        """Total tokens the provider reported, if it did."""
        usage = self.reply.usage if self.reply is not None else None
        return usage.total_tokens if usage is not None else None


async def sse_frames(
    first: Reply,
    rest: AsyncGenerator[Reply, None],
    final: FinalReply | None = None,
    dialect: str = "chat",
) -> AsyncIterator[bytes]:
    """Frame reply messages as server-sent events; errors after the first byte end the stream.

    ``final`` receives the final message (usage, deployment), or the error that ended the
    stream (``final.failure``). For the Responses and Messages dialects the chunks already are
    whole SSE events (``event:`` and ``data:``), relayed as they are, and the stream ends with
    the dialect's own last event rather than ``[DONE]``. A healthy stream's chunks cost nothing
    more for the failure's sake (a reference to the last one kept): only the ending does.
    """
    chat = dialect not in ("responses", "messages")
    reply: Reply | None = first
    relayed = b""
    try:
        while reply is not None:
            kind = reply.kind
            if kind is ReplyKind.CHUNK:
                if chat:
                    yield sse(reply.body)
                else:
                    relayed = reply.body
                    yield relayed
            elif kind is ReplyKind.KEEPALIVE:
                yield SSE_KEEPALIVE
            elif kind is ReplyKind.FINAL:
                if final is not None:
                    final.reply = reply
                if chat:
                    yield SSE_DONE
                return
            elif kind is ReplyKind.ERROR:
                failure = error_from_reply(reply)
                if final is not None:
                    final.failure = failure
                    if reply.usage is not None:  # tokens a stream used before it failed
                        final.reply = reply
                if chat:
                    yield sse(reply.body)
                elif not reply.in_stream:  # else the last chunk relayed already said it
                    yield _dialect_error(failure, dialect, first.body, relayed)
                return
            reply = await anext(rest, None)
    except ApiError as exc:
        if final is not None:
            final.failure = exc
        yield sse_error(exc) if chat else _dialect_error(exc, dialect, first.body, relayed)
    finally:
        if final is not None and not chat:
            final.opening, final.relayed = first.body, relayed
        await rest.aclose()  # a client that went away releases its reply inbox at once


def stream_error(
    exc: ApiError, dialect: str, final: FinalReply | None = None, model: str = ""
) -> bytes:
    """The event that ends a stream that already started with ``exc``, in its dialect;
    ``final``: the stream's, which knows what it relayed; ``model``: the one asked for (a
    Responses stream that relayed nothing yet is opened for it first)."""
    if dialect in ("responses", "messages"):
        if final is None:
            return _dialect_error(exc, dialect, b"", b"", model)
        return _dialect_error(exc, dialect, final.opening, final.relayed, model)
    return sse_error(exc)


def _dialect_error(
    exc: ApiError, dialect: str, opening: bytes, relayed: bytes, model: str = ""
) -> bytes:
    """An error event in the client's dialect, for a stream that already started: Anthropic's
    ``error`` event; Responses' ``error`` then ``response.failed``, numbered after the last
    event relayed (``opening``: the stream's first chunk, ``relayed``: its last)."""
    if dialect == "messages":
        return anthropic.error_event(exc)
    return stream_failed(exc, opening, relayed, model=model)
