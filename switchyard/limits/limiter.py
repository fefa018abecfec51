"""Per-key limits at the edge: one atomic Redis round trip per request.

``admit`` checks requests per minute, tokens per minute (the prompt estimated from the body),
concurrent requests and the budget left in the current period, all in one Lua script, and
returns the ``x-ratelimit-*`` headers OpenAI clients know. With a budget, an admitted request
holds the estimated cost of one request of its model (learnt by accounting from the answers
billed) until it ends, so a burst of requests sent at once stops at the budget rather than
all passing before the first is billed. ``settle`` (after the answer) queues the release of
the concurrency slot and budget hold and the correction of the token estimate to the real
usage; they ride along with the key's next admission, or leave within ``SETTLE_DELAY_S`` when
the key is quiet. Keys without any limit never touch Redis.

Slots and holds are leased (:mod:`switchyard.limits.slots`): the edge renews all the requests
it holds in one call every ~20 s, so those of an edge that dies unsettled free within a minute.

When Redis/Valkey cannot be reached, ``redis.on_unavailable`` decides: ``fail_closed`` refuses
with a clear 503, ``fail_open`` lets requests through unlimited (and says so in the log).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from nats.nuid import NUID

from switchyard.config import Settings
from switchyard.errors import RateLimited, ServiceUnavailable
from switchyard.limits import keys as rk
from switchyard.limits import periods
from switchyard.limits.budgets import budget_exceeded, budget_nano
from switchyard.limits.credentials import read_password
from switchyard.limits.resp import RedisReplyError, RedisUnavailable, Script, ScriptClient
from switchyard.limits.scripts import ADMIT, RENEW, SETTLE, SPENT
from switchyard.limits.slots import LEASE_S, SlotLeases
from switchyard.runtime import semconv as sc
from switchyard.runtime.metrics import Metrics
from switchyard.runtime.tasks import TaskSupervisor
from switchyard.runtime.throttle import Throttle
from switchyard.schemas.keys import ClientKey

log = logging.getLogger("switchyard.limits")

_REFUSALS = {
    1: ("requests", "rate_limit_exceeded"),
    2: ("tokens", "rate_limit_exceeded"),
    3: ("concurrent requests", "too_many_concurrent_requests"),
    5: ("tokens", "request_too_large"),
}
# Which limit refused, by the ADMIT script's code (metrics label; the error code stays OpenAI's).
_LIMIT_NAMES = {1: "rpm", 2: "tpm", 3: "parallel", 5: "tpm"}
SETTLE_DELAY_S = 0.02
# Pauses before looking again at a key whose slots or budget holds are all taken by live
# requests, before refusing (see ``Limiter.admit``): past another edge's settle delay, twice
# (a busy edge's timer fires late). Each costs a refused request one more script run.
RECHECK_S = (0.03, 0.07)
MAX_CARRIED = 64  # settles one admission carries at most
# Retry-After of a 503 when Redis/Valkey is unreachable: a restart or failover takes seconds.
UNAVAILABLE_RETRY_S = 3.0


def _duration(seconds: float) -> str:
    """OpenAI's reset format: ``850ms``, ``1.5s``, ``6m0s``. Rounded first, so that a value
    just under a unit reads as the next one in that one's form (59.97 s: ``1m0s``, once read
    ``60s`` while a success said ``1m0s`` of the same window; 0.9996 s: ``1s``)."""
    if round(seconds * 1000) < 1000:
        return f"{max(0, round(seconds * 1000))}ms"
    text = f"{seconds:.3g}"
    if float(text) < 60:
        return f"{text}s"
    whole = round(seconds)
    return f"{whole // 60}m{whole % 60}s"


@dataclass(slots=True)
class Ticket:
    """An admitted request: what to settle afterwards, and the headers to send."""

    key: ClientKey
    member: str
    estimate: int
    headers: list[tuple[bytes, bytes]]
    # The prompt's part of ``estimate``: what stays counted when no usage comes back (a
    # provider that failed, a full queue, a client gone), not the answer's cap as well.
    prompt: int = 0


class Limiter:
    """Args:
    lease_s: how long a concurrency slot lives unrenewed (tests shorten it); the edge
        renews its slots three times per lease (:mod:`switchyard.limits.slots`).
    """

    def __init__(
        self, settings: Settings, metrics: Metrics | None = None, *, lease_s: float = LEASE_S
    ) -> None:
        self._client = ScriptClient(
            settings.redis_url,
            username="ingress",
            password=read_password(settings.redis_password_dir, "ingress"),
            timeout=settings.redis.timeout_s,
        )
        self._admit = Script(self._client, ADMIT)
        self._settle = Script(self._client, SETTLE)
        self._spent = Script(self._client, SPENT)
        self._fail_open = settings.redis.on_unavailable == "fail_open"
        self._pending: dict[str, list[str]] = {}  # key id -> member, actual, member, actual...
        self._flush: asyncio.TimerHandle | None = None
        self._tasks = TaskSupervisor("limits")
        self._slots = SlotLeases(
            Script(self._client, RENEW),
            self._tasks,
            lease_s=lease_s,
            cap_s=settings.ingress.max_deadline_s + 60,
        )
        self._nuid = NUID()
        self._warn = Throttle(10.0)
        self._periods: dict[str, tuple[str, float, float]] = {}  # period -> (id, end, start)
        self._timing = (
            metrics.histogram(
                sc.LIMITER_DURATION,
                "Round trip of one limits check to Redis/Valkey, by outcome: ok, unavailable "
                "(timed out or unreachable), error (Valkey refused the script).",
                (sc.OUTCOME,),
                sc.LIMITER_BUCKETS,
            )
            if metrics is not None
            else None
        )

    def _period(self, period: str, now: float) -> tuple[str, float]:
        """``periods.current``, cached until the period ends (it is asked on every request)."""
        cached = self._periods.get(period)
        if cached is not None and cached[2] <= now < cached[1]:
            return cached[0], cached[1]
        period_id, end = periods.current(period, now)
        start = now if period != "total" else 0.0
        self._periods[period] = (period_id, end, start)
        return period_id, end

    @staticmethod
    def applies(key: ClientKey) -> bool:
        return bool(key.rpm or key.tpm or key.max_parallel or key.budget_usd)

    @staticmethod
    def _in_flight(key: ClientKey) -> bool:
        """Whether ``key``'s requests are kept in its in-flight set (leased, settled): for
        ``max_parallel`` and for the holds of a budget."""
        return bool(key.max_parallel or key.budget_usd)

    async def budget_refusal(self, key: ClientKey) -> RateLimited | None:
        """The 429 ``budget_exceeded`` a request of ``key`` would get now, or None: for work
        that is not one request (a batch's creation), checked without admitting anything.

        Raises:
            ServiceUnavailable: Redis/Valkey cannot be reached and the policy is fail-closed.
        """
        if not key.budget_usd:
            return None
        now = time.time()
        period_id, period_end = self._period(key.budget_period, now)
        try:
            spent = int(await self._spent(keys=[], args=[rk.budget(key.id, period_id)]) or 0)
        except (RedisUnavailable, RedisReplyError) as exc:
            self._unavailable(exc)
            return None
        if spent < budget_nano(key):
            return None
        retry_ms = int(max(1.0, period_end - now) * 1000) if period_end != float("inf") else 0
        return self._refusal(key, code=4, retry_ms=retry_ms, spent=spent, estimate=0, headers=[])

    async def admit(
        self,
        key: ClientKey,
        request_id: str,
        estimate: int,
        alias: str = "",
        *,
        prompt: int | None = None,
    ) -> Ticket | None:
        """Admit one request for ``key`` to the model ``alias`` (as the client named it: the
        usage event's alias, whose cost a budget holds) (None when the key has no limits or
        Redis is down under ``fail_open``).

        Raises:
            RateLimited: a limit or the budget is exhausted (429, with Retry-After and headers).
            ServiceUnavailable: Redis/Valkey cannot be reached and the policy is fail-closed.
        """
        if not self.applies(key):
            return None
        # Unique per admission, even when a client reuses its X-Request-Id for retries.
        member = f"{request_id}:{self._nuid.next().decode()}"
        for wait in (*RECHECK_S, None):
            reply = await self._try_admit(key, member, estimate, alias)
            if reply is None:
                return None
            code, requests_used, tokens_used, retry_ms, _, spent, held, holders = reply[:8]
            headers = self._headers(key, requests_used, tokens_used, reply[8], reply[9])
            if code == 0:
                if self._in_flight(key):
                    self._slots.take(key.id, member, time.time())
                kept = estimate if prompt is None else min(prompt, estimate)
                return Ticket(key, member, estimate, headers, kept)
            # Full with requests a live edge runs (their slots, or their budget holds): the
            # one the client just got its answer to may be among them, its release on its way
            # from another edge (settles leave within SETTLE_DELAY_S). A client sending one
            # request at a time was refused 20 times in 40 across two edges: look again.
            live = (code == 3 and retry_ms <= 1000) or (code == 4 and held > 0)
            if wait is None or not live:
                break
            await asyncio.sleep(wait)
        raise self._refusal(
            key,
            code=code,
            retry_ms=retry_ms,
            spent=spent,
            estimate=estimate,
            headers=headers,
            held=held,
            holders=holders,
        )

    async def _try_admit(
        self, key: ClientKey, member: str, estimate: int, alias: str
    ) -> tuple[int, ...] | None:
        """One run of the ADMIT script (carrying this key's pending settles): its reply, or
        None when Redis is down under ``fail_open``."""
        now = time.time()
        period_id, period_end = self._period(key.budget_period, now)
        reset_ms = int(max(1.0, period_end - now) * 1000) if period_end != float("inf") else 0
        pending = self._pending.pop(key.id, [])
        carried, rest = pending[: MAX_CARRIED * 2], pending[MAX_CARRIED * 2 :]
        if rest:  # they leave with the next admission or the flush
            self._pending[key.id] = rest
            self._schedule_flush()
        began = time.perf_counter()
        try:
            reply = await self._admit(
                keys=[
                    rk.requests(key.id),
                    rk.tpm_tokens(key.id),
                    rk.parallel(key.id),
                    rk.holds(key.id),
                ],
                args=[
                    int(now * 1000),
                    key.rpm,
                    key.tpm,
                    estimate,
                    key.max_parallel,
                    member,
                    budget_nano(key),
                    self._slots.lease_ms,
                    self._slots.fresh_ms,
                    reset_ms,
                    rk.budget(key.id, period_id),
                    alias,
                    rk.estimates(key.id),
                    rk.platform_estimates(),
                    *carried,
                ],
            )
        except (RedisUnavailable, RedisReplyError) as exc:
            # Timed too: a hung Valkey's calls (each waits out redis.timeout_s) are exactly
            # the ones an operator needs to see, and the panel went blank when only answers
            # were counted.
            self._time(began, "error" if isinstance(exc, RedisReplyError) else "unavailable")
            if carried:  # not applied: keep them for the next call
                self._pending.setdefault(key.id, [])[:0] = carried
                self._schedule_flush()
            self._unavailable(exc)
            return None
        self._time(began, "ok")
        return tuple(int(v) for v in reply)

    def _time(self, began: float, outcome: str) -> None:
        if self._timing is not None:
            self._timing.labels(outcome).observe(time.perf_counter() - began)

    def _unavailable(self, exc: BaseException) -> None:
        if isinstance(exc, RedisReplyError):
            log.error("Redis refused the limits script: %s", exc)
        if not self._fail_open:
            if self._warn.ready():  # the operator's one line (clients each get the 503)
                log.warning(
                    "Redis/Valkey unreachable (%s); requests of keys with limits are refused "
                    "(503 limits_unavailable) until it answers (redis.on_unavailable: "
                    "fail_closed)",
                    type(exc).__name__,
                )
            raise ServiceUnavailable(
                "rate limits cannot be checked: Redis/Valkey is unreachable",
                code="limits_unavailable",
                retry_after=UNAVAILABLE_RETRY_S,
            ) from None
        if self._warn.ready():
            log.warning(
                "Redis/Valkey unreachable (%s); admitting requests without limits",
                type(exc).__name__,
            )

    @staticmethod
    def _headers(
        key: ClientKey,
        requests_used: int,
        tokens_used: int,
        reset_requests_ms: int,
        reset_tokens_ms: int,
    ) -> list[tuple[bytes, bytes]]:
        """OpenAI-style ``x-ratelimit-*`` headers. A reset is when the 60 s window is back to
        its initial state (OpenAI's definition): when its newest request (for tokens, the
        newest that holds any) leaves it, as the ADMIT script measured."""
        out: list[tuple[bytes, bytes]] = []
        if key.rpm:
            out += [
                (b"x-ratelimit-limit-requests", str(key.rpm).encode()),
                (b"x-ratelimit-remaining-requests", str(max(0, key.rpm - requests_used)).encode()),
                (b"x-ratelimit-reset-requests", _duration(reset_requests_ms / 1000).encode()),
            ]
        if key.tpm:
            out += [
                (b"x-ratelimit-limit-tokens", str(key.tpm).encode()),
                (b"x-ratelimit-remaining-tokens", str(max(0, key.tpm - tokens_used)).encode()),
                (b"x-ratelimit-reset-tokens", _duration(reset_tokens_ms / 1000).encode()),
            ]
        return out

    @staticmethod
    def _refusal(
        key: ClientKey,
        *,
        code: int,
        retry_ms: int,
        spent: int,
        estimate: int,
        headers: list[tuple[bytes, bytes]],
        held: int = 0,
        holders: int = 0,
    ) -> RateLimited:
        retry = max(0.001, retry_ms / 1000)
        if code == 4 and held:
            # Held by requests still running: one ends soon (even a total budget's).
            err = budget_exceeded(
                key, retry_s=retry, spent=spent, held=held, holders=holders, headers=headers
            )
        elif code == 4:
            never = key.budget_period == "total"  # no Retry-After: waiting does not help
            err = budget_exceeded(
                key, retry_s=None if never else retry, spent=spent, headers=headers
            )
        else:
            what, err_code = _REFUSALS.get(code, ("requests", "rate_limit_exceeded"))
            if code == 5:
                message = (
                    f"this request needs ~{estimate} tokens, more than the key's "
                    f"{key.tpm} tokens per minute: it cannot run on this key, however long you "
                    "wait; send a shorter request or ask for a higher tpm"
                )
            elif code == 3:
                message = (
                    f"this key allows {key.max_parallel} concurrent requests; "
                    "wait for one to finish"
                )
                if retry > 1:  # the script found only slots nobody renews any more
                    message = (
                        f"this key allows {key.max_parallel} concurrent requests, all held by "
                        f"requests of a gateway replica that stopped; they free within "
                        f"{retry:.0f}s"
                    )
            else:
                limit = key.rpm if code == 1 else key.tpm
                message = (
                    f"rate limit reached for {what}: {limit} per minute on this key; "
                    f"retry in {retry:.2f}s"
                )
            err = RateLimited(
                message,
                code=err_code,
                # No Retry-After where waiting cannot help: the SDKs wait out one of up to a
                # minute, twice, before they give up on a request that can never run.
                retry_after=None if code == 5 else retry,
                headers=headers,
                limit=_LIMIT_NAMES.get(code),
                no_retry=code == 5,  # x-should-retry: false (the SDKs would retry a 429)
            )
        return err

    def settle(self, ticket: Ticket, actual_tokens: int | None) -> None:
        """Free the slot and budget hold and record the real token count (with the key's next
        admission, or within ``SETTLE_DELAY_S``)."""
        key = ticket.key
        if not key.tpm and not self._in_flight(key):
            return
        if self._in_flight(key):
            self._slots.release(key.id, ticket.member)
        if not key.tpm:
            actual = ""
        elif actual_tokens is not None:
            actual = str(actual_tokens)
        else:  # no usage came back: the answer's cap was never used
            actual = str(ticket.prompt) if ticket.prompt < ticket.estimate else ""
        self._pending.setdefault(key.id, []).extend((ticket.member, actual))
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(SETTLE_DELAY_S, self._send)

    def _send(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
        self._flush = None
        pending, self._pending = self._pending, {}
        if pending and not self._tasks.closed:
            self._tasks.spawn(self._settle_quiet(pending), name="limits-settle")

    async def _settle_quiet(self, pending: dict[str, list[str]]) -> None:
        calls = [
            self._settle(
                keys=[rk.tpm_tokens(key_id), rk.parallel(key_id), rk.holds(key_id)], args=[*pairs]
            )
            for key_id, pairs in pending.items()
        ]
        results = await asyncio.gather(*calls, return_exceptions=True)
        failed = sum(1 for r in results if isinstance(r, BaseException))
        if failed:
            # Slots and holds expire on their own (stale entries are swept); token corrections
            # are lost.
            log.warning("could not settle requests of %d keys in Redis", failed)

    async def close(self) -> None:
        # Requests still held now are being cut with the process: free their slots and holds
        # at once rather than a lease later.
        for key_id, members in self._slots.stop().items():
            self._pending.setdefault(key_id, []).extend(
                m for member in members for m in (member, "")
            )
        self._send()
        await self._tasks.drain(5.0)
        await self._client.close()
