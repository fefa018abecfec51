"""A provider failure after part of the answer was sent cools its deployment from here.

Before anything reached the caller, a retryable failure goes back to the heads, and the head
that takes it cools the deployment. Once content was sent the request cannot be retried, so no
head hears of the failure: a provider that broke every stream midway (an error in its stream, a
stall, a connection closed mid-answer) would keep its full share of traffic. The model-proxy
then cools the deployment itself, as a head would (:class:`CooldownWriter`): for the failure's
``Retry-After`` when the provider sent one, else ``routing.cooldown_s``.

Only for a failure that would have been retried before anything was sent, and that says
something about the provider: not what the caller did (it left, its deadline passed, its
request was refused), nor a key that is not stored, nor a bad-request error the provider
reported in its stream (``retry_after`` 0: it may be the client's request).
"""

from __future__ import annotations

from switchyard.errors import ApiError
from switchyard.runtime.cooldowns import CooldownWriter
from switchyard.workers.modelproxy.providers import upstream_errors as ue


def cooldown_after_sent(exc: ApiError, *, default_s: float) -> float:
    """Seconds to cool the deployment that failed with ``exc`` after content was sent; 0 for
    none. The caller's own doings (a deadline, a refused request) are never retryable."""
    if not ue.retryable(exc) or ue.no_cooldown(exc):
        return 0.0
    return default_s if exc.retry_after is None else exc.retry_after


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
            await self._writer.cool(deployment, seconds, status=exc.status, reason=reason)
