"""Upstream failures, translated once into Switchyard errors.

Which failures are worth another attempt (on this or another deployment): rate limits, timeouts,
server errors, connection failures, and our own credentials being refused (another deployment
may hold a valid key). Not retried: anything the client's request caused (400, 404, 413, 422,
content policy), because every deployment would answer the same.
"""

from __future__ import annotations

import math

from switchyard.errors import ApiError, InvalidRequest, PayloadTooLarge, ProviderError, RateLimited

RETRYABLE_STATUSES = frozenset({401, 403, 408, 409, 425, 429, 500, 502, 503, 504, 529})


def from_status(
    status: int,
    message: str,
    *,
    provider: str,
    code: str | None = None,
    retry_after: float | None = None,
) -> ApiError:
    """The error a client should see for an upstream HTTP ``status``.

    Client-caused statuses keep their meaning (400 stays 400); everything else becomes a 502
    :class:`ProviderError` carrying the upstream status, except 429, which stays 429 so clients
    back off.
    """
    if status == 429:
        exc: ApiError = ProviderError(
            message,
            provider=provider,
            upstream_status=429,
            retryable=True,
            code=code or "rate_limit_exceeded",
            retry_after=retry_after,
        )
        exc.status = 429
        exc.type = RateLimited.type
        return exc
    if status == 413:
        return PayloadTooLarge(message, code=code)
    if 400 <= status < 500 and status not in RETRYABLE_STATUSES:
        return InvalidRequest(message, code=code or "provider_rejected_request")
    return ProviderError(
        message,
        provider=provider,
        upstream_status=status,
        retryable=status in RETRYABLE_STATUSES,
        code=code or ("provider_auth_error" if status in (401, 403) else "provider_error"),
        retry_after=retry_after,
    )


def unreachable(provider: str, detail: str) -> ProviderError:
    return ProviderError(
        f"provider {provider} is unreachable: {detail}",
        provider=provider,
        retryable=True,
        code="provider_unreachable",
    )


def timed_out(provider: str, what: str) -> ProviderError:
    return ProviderError(
        f"provider {provider} timed out waiting for {what}",
        provider=provider,
        retryable=True,
        code="provider_timeout",
    )


def retryable(exc: ApiError) -> bool:
    return isinstance(exc, ProviderError) and exc.retryable


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` value; None when absent or not a finite number.

    Never raises: the value comes from outside (a provider, or a header on the bus).
    """
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return max(0.0, seconds) if math.isfinite(seconds) else None
