"""A key's budget, checked for work that reaches the bus past the edge's limiter.

The Batch API runner sends a batch's lines on the bus as the key that created the batch; the
edge checked that key's budget once, when the batch was created. :class:`BudgetCheck` lets the
runner check it again before every line, so one large batch cannot spend far past the budget.
It reads only the key's spend counter for the current period (the ``batch`` Valkey role may
read nothing else, and write nothing), and keeps each answer for ``cache_s``: lines of one
batch go out many per second, and a budget does not need to be exact to the line (the spend
of lines already running lands after they answer anyway).

Only the budget: RPM, TPM and concurrent requests are the HTTP edge's limits, not a batch's
(``docs/batch-api.md``).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Sequence

from switchyard.config import Settings
from switchyard.errors import RateLimited, ServiceUnavailable
from switchyard.limits import keys as rk
from switchyard.limits import periods
from switchyard.limits.credentials import read_password
from switchyard.limits.resp import RedisReplyError, RedisUnavailable, ScriptClient
from switchyard.runtime.shared_reads import SharedReads
from switchyard.runtime.throttle import Throttle
from switchyard.schemas.keys import ClientKey

log = logging.getLogger("switchyard.limits")

# How long one read of a key's spend answers for all of its lines.
BUDGET_CACHE_S = 1.0
# Retry-After of a 503 when Redis/Valkey is unreachable (as the edge's limiter says).
UNAVAILABLE_RETRY_S = 3.0
WARN_EVERY_S = 10.0  # how often an unreadable Valkey is logged


def budget_nano(key: ClientKey) -> int:
    """``key``'s budget in nano-dollars, as the counters count: 0 for none, and at least 1 for
    any budget set (a budget under a nano-dollar once rounded to 0, which means none)."""
    if not key.budget_usd:
        return 0
    return max(1, int(key.budget_usd * rk.NANO))


def budget_exceeded(
    key: ClientKey,
    *,
    retry_s: float | None,
    spent: int,
    headers: Sequence[tuple[bytes, bytes]] = (),
    held: int = 0,
    holders: int = 0,
) -> RateLimited:
    """The 429 ``budget_exceeded`` (type ``insufficient_quota``) of a key whose budget is
    used up: ``spent`` nano-dollars, resetting in ``retry_s`` seconds (None: never, a
    ``total`` budget; the answer then has no ``Retry-After``, since waiting does not help).
    With ``held`` (nano-dollars), the rest of the budget is held by ``holders`` requests still
    running (the edge's estimate of their cost): ``retry_s`` is then how soon to try again.
    The edge's limiter and the batch runner give the same error."""
    period = "in all" if key.budget_period == "total" else f"per {key.budget_period} period"
    if held:
        message = (
            f"this key's budget of ${key.budget_usd:g} {period} is held by {holders} "
            f"requests still running (spent ${_usd(spent)}, held ~${_usd(held)}); "
            "retry when they end"
        )
    else:
        if retry_s is None:
            when = "it does not reset (a total budget): an operator can raise it"
        else:
            # The period's end, to the nearest second (truncating said 23:59:59 for midnight).
            resets = dt.datetime.fromtimestamp(round(time.time() + retry_s), dt.UTC)
            when = f"it resets at {resets.isoformat(timespec='seconds')}"
        message = (
            f"this key's budget of ${key.budget_usd:g} {period} is used up "
            f"(spent ${_usd(spent)}); {when}"
        )
    return RateLimited(
        message,
        code="budget_exceeded",
        retry_after=retry_s,
        type="insufficient_quota",
        headers=headers,
        limit="budget",
    )


def _usd(nano: int) -> str:
    """Nano-dollars as dollars, to the micro-dollar without trailing zeros: $0.00056, not
    $0.0006."""
    return f"{nano / rk.NANO:.6f}".rstrip("0").rstrip(".")


def retry_after_s(period_end: float, now: float) -> float | None:
    """Retry-After of a spent budget: until its period ends; None for a ``total`` budget,
    which never resets."""
    if period_end == float("inf"):
        return None
    return max(1.0, period_end - now)


class BudgetCheck:
    """Reads keys' spend as one Valkey role and says whether a key's budget is used up.

    Args:
        role: the Valkey ACL user (its password is ``<redis.password_dir>/<role>.password``).
        cache_s: how long one read of a key's spend counter answers.

    When Valkey cannot be read, ``redis.on_unavailable`` decides, as at the edge:
    ``fail_closed`` raises :class:`ServiceUnavailable` (the caller waits and asks again),
    ``fail_open`` lets the work through unchecked (and logs that it does).
    """

    def __init__(
        self, settings: Settings, *, role: str = "batch", cache_s: float = BUDGET_CACHE_S
    ) -> None:
        self._client = ScriptClient(
            settings.redis_url,
            username=role,
            password=read_password(settings.redis_password_dir, role),
            timeout=settings.redis.timeout_s,
        )
        self._fail_open = settings.redis.on_unavailable == "fail_open"
        # One read of a spend counter answers for cache_s.
        self._spent: SharedReads[int] = SharedReads(self._fetch, cache_s=cache_s)
        self._warn = Throttle(WARN_EVERY_S)

    async def refusal(self, key: ClientKey) -> RateLimited | None:
        """The 429 ``budget_exceeded`` a request of ``key`` would get at the edge now, or
        None (no budget, budget left, or Valkey unreadable under ``fail_open``).

        Raises:
            ServiceUnavailable: Valkey cannot be read and the policy is fail-closed.
        """
        if not key.budget_usd:
            return None
        now = time.time()
        period_id, period_end = periods.current(key.budget_period, now)
        try:
            spent = await self._spent.get(rk.budget(key.id, period_id))
        except (RedisUnavailable, RedisReplyError) as exc:
            self._unavailable(exc)
            return None
        if spent < budget_nano(key):
            return None
        return budget_exceeded(key, retry_s=retry_after_s(period_end, now), spent=spent)

    async def _fetch(self, counter: str) -> int:
        return int(await self._client.call("GET", counter) or 0)

    def _unavailable(self, exc: BaseException) -> None:
        # Once per WARN_EVERY_S, not once per line: a batch checks before every line.
        say = self._warn.ready()
        if say and isinstance(exc, RedisReplyError):  # a wrong password or ACL: say it loudly
            log.error("Valkey refused the budget check: %s", exc)
        if not self._fail_open:
            if say:
                log.warning(
                    "Redis/Valkey unreachable (%s); work of keys with a budget waits",
                    type(exc).__name__,
                )
            raise ServiceUnavailable(
                "budgets cannot be checked: Redis/Valkey is unreachable",
                code="limits_unavailable",
                retry_after=UNAVAILABLE_RETRY_S,
            ) from None
        if say:
            log.warning(
                "Redis/Valkey unreachable (%s); sending work without budget checks",
                type(exc).__name__,
            )

    async def close(self) -> None:
        await self._spent.close()
        await self._client.close()
