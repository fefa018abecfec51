"""A provider failure after part of the answer was sent cools its deployment from here.

Before anything reached the caller, a retryable failure goes back to the heads, and the head
that takes it cools the deployment. Once content was sent the request cannot be retried, so no
head hears of the failure: a provider that broke every stream midway (an error in its stream, a
stall, a connection closed mid-answer) would keep its full share of traffic. The model-proxy
then cools the deployment itself, as a head would (:class:`CooldownWriter`): for the failure's
``Retry-After`` when the provider sent one, else ``routing.cooldown_s``. A native stream's own
error event once its answer began (Anthropic's ``error``, Responses' ``response.failed``) is
such a failure too (:class:`~.providers.native_stream.Relayed`).

A cooldown records the status it followed: the provider's own when it is known
(:func:`provider_status`: a 500, where the client and the bus see the 502 of any provider 5xx),
else the failure's. A reroute carries it to the head that cools (``Sy-Upstream-Status``).

Only for a failure that would have been retried before anything was sent, and that says
something about the provider: not what the caller did (it left, its deadline passed, its
request was refused), nor a key that is not stored, nor a bad-request error the provider
reported in its stream (``retry_after`` 0: it may be the client's request).
"""

from __future__ import annotations

from switchyard.errors import ApiError, ProviderError
from switchyard.runtime.cooldowns import CooldownWriter
from switchyard.workers.modelproxy.providers import upstream_errors as ue


def cooldown_after_sent(exc: ApiError, *, default_s: float) -> float:
    """Seconds to cool the deployment that failed with ``exc`` after content was sent; 0 for
    none. The caller's own doings (a deadline, a refused request) are never retryable."""
    if not ue.retryable(exc) or ue.no_cooldown(exc):
        return 0.0
    return default_s if exc.retry_after is None else exc.retry_after


def provider_status(exc: ApiError) -> int:
    """The provider's own error status behind ``exc`` (400-599), or 0 when there is none: a
    timeout, a connection that failed, a 200 whose body was no answer, Switchyard's own error."""
    status = exc.upstream_status if isinstance(exc, ProviderError) else None
    return status if status is not None and 400 <= status <= 599 else 0


class SentFailures:
    """Cools the deployments whose provider failed after part of an answer was sent."""

    def __init__(self, writer: CooldownWriter, *, default_s: float) -> None:
        self._writer = writer
        self._default_s = default_s

    async def failed(self, deployment: str, exc: ApiError, reason: str) -> None:
        """``deployment`` failed with ``exc`` after content was sent (``reason``: the attempt
        as a head's cooldown names it). Never raises."""
        seconds = cooldown_after_sent(exc, default_s=self._default_s)
        if seconds > 0:
            status = provider_status(exc) or exc.status
            asked = exc.retry_after is not None
            await self._writer.cool(deployment, seconds, status=status, reason=reason, asked=asked)
