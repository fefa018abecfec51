"""HTTP responses shared by every HTTP surface (the edges, the admin API and UI).

The one place an :class:`~switchyard.errors.ApiError` becomes an HTTP response: an
OpenAI-shaped JSON body, the error's status, ``Retry-After`` and any headers it carries.
"""

from __future__ import annotations

from starlette.responses import Response

from switchyard.bus.headers import http_retry_after
from switchyard.errors import ApiError
from switchyard.schemas.openai import error_body, openai_status

JSON = "application/json"
# On an error no retry of the same request can fix (``ApiError.no_retry``): the OpenAI and
# Anthropic SDKs read it before their status rules, so a 429 that can never succeed is not
# sent again (each retry counted against the key's limits; a 5xx's, a billed provider call).
SHOULD_NOT_RETRY = (b"x-should-retry", b"false")


def error_response(
    exc: ApiError, request_id: str | None = None, *, body: bytes | None = None
) -> Response:
    """The HTTP response for ``exc``: its status and headers, with OpenAI's error body unless
    ``body`` gives another dialect's."""
    headers: dict[str, str] = {}
    if exc.retry_after is not None:
        headers["Retry-After"] = http_retry_after(exc.retry_after)
    if request_id:
        headers["x-request-id"] = request_id
    for name, value in exc.headers:
        headers[name.decode()] = value.decode()
    if exc.no_retry:
        headers[SHOULD_NOT_RETRY[0].decode()] = SHOULD_NOT_RETRY[1].decode()
    status = exc.status
    if body is None:
        body, status = error_body(exc), openai_status(status)
    return Response(body, status_code=status, media_type=JSON, headers=headers)
