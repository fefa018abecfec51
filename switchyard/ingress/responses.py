"""SSE framing of the edge's streamed answers (JSON errors: :mod:`switchyard.runtime.http`)."""

from __future__ import annotations

from switchyard.errors import ApiError
from switchyard.runtime.http import JSON, error_response
from switchyard.schemas.openai import error_body

__all__ = ["JSON", "SSE_DONE", "SSE_KEEPALIVE", "error_response", "sse", "sse_error"]

SSE_DONE = b"data: [DONE]\n\n"
SSE_KEEPALIVE = b": keep-alive\n\n"


def sse(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"


def sse_error(exc: ApiError) -> bytes:
    return sse(error_body(exc))
