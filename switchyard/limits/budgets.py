"""A key's budget, checked for work that reaches the bus past the edge's limiter.

The Batch API runner sends a batch's lines on the bus as the key that created the batch; the
edge checked that key's budget once, when the batch was created. :class:`BudgetCheck` lets the
runner check it again before every line, so one large batch cannot spend far past the budget.
It reads the key's spend counter for the current period and the estimated cost of one request
per model that accounting learns (the key's, and the platform's: what the edge holds of a
budget per request in flight); the ``batch`` Valkey role may read nothing else, and write
nothing. Each answer is kept for ``cache_s``: lines of one batch go out many per second, and
what the runner's own lines in flight will cost is counted by the runner
(:mod:`switchyard.workers.batch.holds`), not read.

Only the budget: RPM, TPM and concurrent requests are the HTTP edge's limits, not a batch's
(``docs/batch-api.md``).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from switchyard.config import Settings
from switchyard.errors import RateLimited, ServiceUnavailable
from switchyard.limits import keys as rk
from switchyard.limits import periods
from switchyard.limits.credentials import read_password
from switchyard.limits.resp import RedisReplyError, RedisUnavailable, ScriptClient
from switchyard.runtime.shared_reads import SharedReads
from switchyard.runtime.throttle import Throttle
from switchyard.schemas.keys import ClientKey
from switchyard.schemas.money import dollars, nano_dollars

log = logging.getLogger("switchyard.limits")

# How long one read of a key's spend answers for all of its lines.
BUDGET_CACHE_S = 1.0
# Retry-After of a 503 when Redis/Valkey is unreachable (as the edge's limiter says).
UNAVAILABLE_RETRY_S = 3.0
WARN_EVERY_S = 10.0  # how often an unreadable Valkey is logged
# The longest Retry-After the OpenAI and Anthropic SDKs wait out before a retry (a longer one
# they ignore, retrying after their own backoff of seconds).
SDK_MAX_WAIT_S = 60.0


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
    period = _period(key.budget_period)
    if held:
        requests = "request" if holders == 1 else "requests"
        message = (
            f"this key's budget of {dollars(key.budget_usd)} {period} is held by {holders} "
            f"{requests} still running (spent {nano_dollars(spent)}, "
            f"held ~{nano_dollars(held)}); "
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
            f"this key's budget of {dollars(key.budget_usd)} {period} is used up "
            f"(spent {nano_dollars(spent)}); {when}"
        )
    return RateLimited(
        message,
        code="budget_exceeded",
        retry_after=retry_s,
        type="insufficient_quota",
        headers=headers,
        limit="budget",
        # Used up, and back no sooner than an SDK waits (a minute at most): its retries are
        # refused too, each counted against the key's rpm. Held: one ends soon, retries help.
        no_retry=not held and (retry_s is None or retry_s > SDK_MAX_WAIT_S),
    )


def _period(period: str) -> str:
    """How a message names a budget's period: "per daily period", "per 3600 s" (a number of
    seconds once read "per 3600 period"), "in all"."""
    if period == "total":
        return "in all"
    if period.isdigit():
        return f"per {period} s"
    return f"per {period} period"


def retry_after_s(period_end: float, now: float) -> float | None:
    """Retry-After of a spent budget: until its period ends; None for a ``total`` budget,
    which never resets."""
    if period_end == float("inf"):
        return None
    return max(1.0, period_end - now)


@dataclass(frozen=True, slots=True)
class Spend:
    """A key's spend in its current budget period, as read at most ``cache_s`` ago."""

    spent: int  # nano-USD
    budget: int  # nano-USD (:func:`budget_nano`)
    retry_s: float | None  # until the period resets (None: a total budget)
    read_at: float  # time.monotonic() when the read was sent: spend billed before is in it
    estimate: int = 0  # nano-USD one request of the model asked about costs (0: not known)

    @property
    def used_up(self) -> bool:
        return self.spent >= self.budget


class BudgetCheck:
    """Reads keys' spend as one Valkey role and says whether a key's budget is used up.

    Args:
        role: the Valkey ACL user (its password is ``<redis.password_dir>/<role>.password``).
        cache_s: how long one read of a key's spend counter (or of a hash of estimates)
            answers.

    When Valkey cannot be read, ``redis.on_unavailable`` decides, as at the edge:
    ``fail_closed`` raises :class:`ServiceUnavailable` (the caller waits and asks again),
    ``fail_open`` lets the work through unchecked (and logs that it does). An estimate that
    cannot be read is 0 (the work holds nothing, as before estimates), and logged.
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
        # One read of a spend counter, or of a hash of estimates, answers for cache_s.
        self._spent: SharedReads[tuple[int, float]] = SharedReads(self._fetch, cache_s=cache_s)
        self._estimates: SharedReads[dict[str, int]] = SharedReads(
            self._fetch_estimates, cache_s=cache_s
        )
        self._warn = Throttle(WARN_EVERY_S)
        self._warn_estimates = Throttle(WARN_EVERY_S)

    async def refusal(self, key: ClientKey) -> RateLimited | None:
        """The 429 ``budget_exceeded`` a request of ``key`` would get at the edge now for its
        spend alone, or None (no budget, budget left, or Valkey unreadable under
        ``fail_open``).

        Raises:
            ServiceUnavailable: Valkey cannot be read and the policy is fail-closed.
        """
        spend = await self.spend(key)
        if spend is None or not spend.used_up:
            return None
        return self.exceeded(key, spend)

    async def spend(self, key: ClientKey, model: str = "") -> Spend | None:
        """``key``'s spend, with the estimated cost of one request of ``model`` (the alias the
        client names, which its usage is billed under: the key's estimate, else the
        platform's, else 0); None when the key has no budget or Valkey cannot be read under
        ``fail_open``. No Valkey round trip while the reads of the last ``cache_s`` answer.

        Raises:
            ServiceUnavailable: Valkey cannot be read and the policy is fail-closed.
        """
        if not key.budget_usd:
            return None
        now = time.time()
        period_id, period_end = periods.current(key.budget_period, now)
        try:
            spent, read_at = await self._spent.get(rk.budget(key.id, period_id))
        except (RedisUnavailable, RedisReplyError) as exc:
            self._unavailable(exc)
            return None
        estimate = 0
        if model:
            estimate = (await self._estimates.get(rk.estimates(key.id))).get(model, 0)
            if not estimate:
                estimate = (await self._estimates.get(rk.platform_estimates())).get(model, 0)
        return Spend(
            spent=spent,
            budget=budget_nano(key),
            retry_s=retry_after_s(period_end, now),
            read_at=read_at,
            estimate=estimate,
        )

    @staticmethod
    def exceeded(key: ClientKey, spend: Spend, *, held: int = 0, holders: int = 0) -> RateLimited:
        """The 429 ``budget_exceeded`` of ``spend`` (spent, or with ``held``, held by
        ``holders`` requests still running: retry in a second)."""
        retry_s = 1.0 if held else spend.retry_s
        return budget_exceeded(key, retry_s=retry_s, spent=spend.spent, held=held, holders=holders)

    async def _fetch(self, counter: str) -> tuple[int, float]:
        sent = time.monotonic()
        return int(await self._client.call("GET", counter) or 0), sent

    async def _fetch_estimates(self, name: str) -> dict[str, int]:
        try:
            reply = await self._client.call("HGETALL", name)
        except (RedisUnavailable, RedisReplyError) as exc:
            # (A runner newer than its Valkey's ACL file is refused: re-render it.)
            if self._warn_estimates.ready():
                log.warning(
                    "cannot read estimated costs per request (%s); batch lines hold nothing "
                    "of their key's budget",
                    exc if isinstance(exc, RedisReplyError) else type(exc).__name__,
                )
            return {}
        return _estimates(reply)

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


def _estimates(reply: Any) -> dict[str, int]:
    """An HGETALL of estimates (RESP2: field, value, ...) as alias -> nano-USD."""
    if not isinstance(reply, list):
        return {}
    found: dict[str, int] = {}
    for field, value in zip(reply[::2], reply[1::2], strict=False):
        try:
            found[field.decode()] = int(value)
        except (AttributeError, UnicodeDecodeError, ValueError):
            continue  # not an estimate: holds nothing
    return found
