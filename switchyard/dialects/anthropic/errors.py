"""Switchyard's errors in Anthropic's error shape, for clients of ``POST /v1/messages``.

Anthropic's SDKs read ``{"type": "error", "error": {"type": ..., "message": ...}}`` and pick
their exception class from the HTTP status, so the status stays Switchyard's and only the body
changes. Type names follow Anthropic's documented list (400 ``invalid_request_error``, 401
``authentication_error``, 402 ``billing_error``, 403 ``permission_error``, 404
``not_found_error``, 409 ``conflict_error``, 413 ``request_too_large``, 429 ``rate_limit_error``,
500 ``api_error``, 504 ``timeout_error``, 529 ``overloaded_error``: a provider's own 529 keeps its
status, which Anthropic's SDKs wait out and retry). Switchyard's 503 (no workers,
queue full) is Anthropic's "overloaded" and is named so; other 4xx are
``invalid_request_error`` and other 5xx ``api_error``, as Anthropic documents for statuses it
does not list. The parameter at fault, which Anthropic has no field for, leads the message
unless the message names it already (as a whole: ``messages`` is not named by
``messages[1].content``).
"""

from __future__ import annotations

import re

import msgspec

from switchyard.dialects._common import encode, frame
from switchyard.errors import ApiError

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


class _Detail(msgspec.Struct, frozen=True):
    type: str
    message: str


class _Body(msgspec.Struct, frozen=True, tag="error", tag_field="type"):
    error: _Detail


class _BodyWithId(msgspec.Struct, frozen=True, tag="error", tag_field="type"):
    error: _Detail
    request_id: str


def error_type(status: int) -> str:
    """Anthropic's error ``type`` for an HTTP status."""
    known = _TYPES.get(status)
    if known is not None:
        return known
    return "invalid_request_error" if 400 <= status < 500 else "api_error"


def error_body(exc: ApiError, *, request_id: str | None = None) -> bytes:
    """The JSON body of an error response (send it with ``exc.status``)."""
    detail = _detail(exc)
    if request_id is None:
        return encode(_Body(detail))
    return encode(_BodyWithId(detail, request_id))


def error_event(exc: ApiError) -> bytes:
    """An ``event: error`` frame that ends a stream already under way."""
    return frame("error", encode(_Body(_detail(exc))))


def _detail(exc: ApiError) -> _Detail:
    message = exc.message
    if exc.param and not _names(message, exc.param):
        message = f"{exc.param}: {message}"
    return _Detail(error_type(exc.status), message)


def _names(message: str, param: str) -> bool:
    """Whether ``message`` names ``param`` as a whole, not a part of a longer name or path."""
    whole = rf"(?<![\w.\[\]]){re.escape(param)}(?![\w\[]|\.[\w\[])"
    return re.search(whole, message) is not None
