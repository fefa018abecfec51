"""HTTP responses of the edge: JSON bodies, OpenAI-shaped errors, and SSE framing."""

from __future__ import annotations

from starlette.responses import Response

from switchyard.errors import ApiError
from switchyard.schemas.openai import error_body

JSON = "application/json"
SSE_DONE = b"data: [DONE]\n\n"
SSE_KEEPALIVE = b": keep-alive\n\n"


def error_response(exc: ApiError, request_id: str | None = None) -> Response:
    """The one place an :class:`ApiError` becomes an HTTP response."""
    headers: dict[str, str] = {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    if request_id:
        headers["x-request-id"] = request_id
    for name, value in exc.headers:
        headers[name.decode()] = value.decode()
    return Response(error_body(exc), status_code=exc.status, media_type=JSON, headers=headers)


def sse(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"


def sse_error(exc: ApiError) -> bytes:
    return sse(error_body(exc))
