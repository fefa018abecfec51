"""The OpenAI-compatible edge shared by tail and gateway: authenticate, validate, publish, stream.

Per request: read the body once (413 past the limit), authenticate the key against the local
key ring (401), decode the body once into a probe (400), stamp the envelope headers, send it on
``llm.v1.*`` and turn the replies into JSON or SSE. The edge holds no provider secret and no
route. Streaming responses commit their HTTP status only when the first content arrives, so an
error before the first token is a proper HTTP error, not a broken stream.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from switchyard.bus import headers as h
from switchyard.bus import subjects
from switchyard.client import LLMClient, Reply, error_from_reply
from switchyard.config import Settings
from switchyard.errors import ApiError, ModelNotFound, PayloadTooLarge, ServiceUnavailable
from switchyard.ingress.keyring import KeyRing
from switchyard.ingress.responses import (
    JSON,
    SSE_DONE,
    SSE_KEEPALIVE,
    error_response,
    sse,
    sse_error,
)
from switchyard.schemas.keys import ClientKey
from switchyard.schemas.openai import ChatProbe, CompletionProbe, probe
from switchyard.telemetry import request_id_var

log = logging.getLogger("switchyard.ingress")

_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_MODELS = msgspec.json.Decoder(dict[str, Any])
_ENCODE = msgspec.json.Encoder()


class Edge:
    """The request handlers; ``client`` and ``keys`` are attached at startup."""

    def __init__(self, settings: Settings, kind: str) -> None:
        self.settings = settings
        self.kind = kind
        self.client: LLMClient | None = None
        self.keys: KeyRing | None = None
        self._limit = settings.ingress.max_body_bytes
        self._default_s = settings.ingress.default_deadline_s
        self._max_s = settings.ingress.max_deadline_s

    # ---- endpoints ----

    async def chat_completions(self, request: Request) -> Response:
        return await self._llm(request, "chat", subjects.CHAT)

    async def completions(self, request: Request) -> Response:
        return await self._llm(request, "complete", subjects.COMPLETE)

    async def embeddings(self, request: Request) -> Response:
        return await self._llm(request, "embed", subjects.EMBED)

    async def list_models(self, request: Request) -> Response:
        try:
            key = self._authenticate(request)
            return Response(_ENCODE.encode(await self._models(key)), media_type=JSON)
        except ApiError as exc:
            return error_response(exc)

    async def get_model(self, request: Request) -> Response:
        model_id = request.path_params["model"]
        try:
            key = self._authenticate(request)
            for model in (await self._models(key))["data"]:
                if model["id"] == model_id:
                    return Response(_ENCODE.encode(model), media_type=JSON)
            raise ModelNotFound(
                f"The model `{model_id}` does not exist or you do not have access to it.",
                param="model",
            )
        except ApiError as exc:
            return error_response(exc)

    async def health(self, request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type=JSON)

    async def ready(self, request: Request) -> Response:
        """Ready when NATS is connected, the key ring loaded, and a head answers."""
        client = self.client
        if client is None or self.keys is None:
            return Response(b'{"status":"starting"}', status_code=503, media_type=JSON)
        try:
            deadline = str(int((time.time() + 2) * 1000))
            await client.request(subjects.MODELS, b"{}", {h.DEADLINE: deadline})
        except ApiError as exc:
            body = _ENCODE.encode({"status": "not ready", "reason": exc.message})
            return Response(body, status_code=503, media_type=JSON)
        return Response(b'{"status":"ready"}', media_type=JSON)

    # ---- the pipeline ----

    async def _llm(self, request: Request, op: str, subject: str) -> Response:
        request_id = self._request_id(request)
        token = request_id_var.set(request_id)
        try:
            key = self._authenticate(request)
            body = await self._body(request)
            parsed = probe(op, body)
            headers = {
                h.REQUEST_ID: request_id,
                h.DEADLINE: self._deadline_ms(request),
                h.KEY_ID: key.id,
                h.TENANT: key.team,
            }
            for name in h.TRACE_HEADERS:
                value = request.headers.get(name)
                if value:
                    headers[name] = value
            client = self._client()
            if isinstance(parsed, ChatProbe | CompletionProbe) and parsed.stream:
                return await self._stream(client, subject, body, headers, request_id)
            reply = await client.request(subject, body, headers)
            return Response(reply.body, media_type=JSON, headers=_answer_headers(reply, request_id))
        except ApiError as exc:
            return error_response(exc, request_id)
        finally:
            request_id_var.reset(token)

    async def _stream(
        self, client: LLMClient, subject: str, body: bytes, headers: dict[str, str], request_id: str
    ) -> Response:
        replies = client.exchange(subject, body, headers)
        first: Reply | None = None
        async for reply in replies:
            if reply.kind == h.KIND_KEEPALIVE:
                continue
            first = reply
            break
        if first is None:
            raise ServiceUnavailable("the reply ended without an answer", code="no_answer")
        if first.kind == h.KIND_ERROR:
            raise error_from_reply(first)
        return StreamingResponse(
            _sse(first, replies),
            media_type="text/event-stream",
            headers={
                "x-request-id": request_id,
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            },
        )

    # ---- helpers ----

    def _client(self) -> LLMClient:
        if self.client is None:
            raise ServiceUnavailable("the gateway is starting", code="starting")
        return self.client

    def _authenticate(self, request: Request) -> ClientKey:
        if self.keys is None:
            raise ServiceUnavailable("the gateway is starting", code="starting")
        return self.keys.authenticate(_api_key(request))

    async def _body(self, request: Request) -> bytes:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit():
            if int(length) > self._limit:
                raise _too_large(self._limit)
            return await request.body()
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self._limit:
                raise _too_large(self._limit)
            chunks.append(chunk)
        return b"".join(chunks)

    def _deadline_ms(self, request: Request) -> str:
        seconds = self._default_s
        raw = request.headers.get("x-request-timeout") or request.headers.get("x-stainless-timeout")
        if raw:
            try:
                value = float(raw)
            except ValueError:
                value = 0.0
            if value > 0:
                seconds = min(value, self._max_s)
        return str(int((time.time() + seconds) * 1000))

    def _request_id(self, request: Request) -> str:
        given = request.headers.get("x-request-id")
        if given and _SAFE_ID.match(given):
            return given
        return self._client().new_request_id() if self.client else f"req-{time.time_ns()}"

    async def _models(self, key: ClientKey) -> dict[str, Any]:
        reply = await self._client().request(subjects.MODELS, b"{}")
        listing = _MODELS.decode(reply.body)
        listing["data"] = [m for m in listing.get("data", []) if key.allows(m.get("id", ""))]
        return listing


def _api_key(request: Request) -> str | None:
    auth = request.headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return request.headers.get("api-key") or request.headers.get("x-api-key")


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"request body exceeds the limit of {limit} bytes", param=None)


def _answer_headers(reply: Reply, request_id: str) -> dict[str, str]:
    out = {"x-request-id": request_id}
    deployment = reply.headers.get(h.DEPLOYMENT)
    if deployment:
        out["x-switchyard-deployment"] = deployment
        out["x-switchyard-attempts"] = reply.headers.get(h.ATTEMPTS, "1")
    return out


async def _sse(first: Reply, rest: AsyncGenerator[Reply, None]) -> AsyncIterator[bytes]:
    """Frame reply messages as server-sent events; errors after the first byte end the stream."""
    reply: Reply | None = first
    try:
        while reply is not None:
            kind = reply.kind
            if kind == h.KIND_CHUNK:
                yield sse(reply.body)
            elif kind == h.KIND_KEEPALIVE:
                yield SSE_KEEPALIVE
            elif kind == h.KIND_FINAL:
                yield SSE_DONE
                return
            elif kind == h.KIND_ERROR:
                yield sse(reply.body)
                return
            reply = await anext(rest, None)
    except ApiError as exc:
        yield sse_error(exc)
    finally:
        await rest.aclose()  # a client that went away releases its reply inbox at once
