"""SSE framing of the edge's streamed answers, and errors in the client's dialect (the JSON
itself: :mod:`switchyard.runtime.http`)."""

from __future__ import annotations

from starlette.responses import Response

from switchyard.dialects import anthropic
from switchyard.errors import ApiError
from switchyard.runtime.http import JSON, error_response
from switchyard.schemas.openai import error_body
from switchyard.telemetry import request_id_var

__all__ = [
    "JSON",
    "SSE_DONE",
    "SSE_KEEPALIVE",
    "dialect_error",
    "error_response",
    "sse",
    "sse_error",
]

SSE_DONE = b"data: [DONE]\n\n"
SSE_KEEPALIVE = b": keep-alive\n\n"


def sse(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"


def sse_error(exc: ApiError) -> bytes:
    return sse(error_body(exc))


def dialect_error(exc: ApiError, *, as_anthropic: bool) -> Response:
    """``exc`` in OpenAI's shape, or in Anthropic's for an Anthropic client, which reads the
    request's id in the body's ``request_id`` and in ``request-id`` (as the fast path's
    errors carry it); ``x-request-id`` either way. The id is the request's being answered."""
    request_id = request_id_var.get()
    if not as_anthropic:
        return error_response(exc, request_id)
    body = anthropic.error_body(exc, request_id=request_id)
    response = error_response(exc, request_id, body=body)
    if request_id:
        response.headers["request-id"] = request_id
    return response
