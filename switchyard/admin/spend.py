"""Reading spend back for people: per key (current budget period, total) and per day, by key,
team, model alias or deployment (the provider account and model that served).

Uses the ``admin`` Valkey role, which may only read Switchyard's keys. Amounts are stored in
nano-dollars and shown in dollars. When Valkey/Redis cannot be read, every read for people
raises :class:`SpendUnavailable` (a 503 with Retry-After, or one line from the CLI) instead of
the client library's error, which the API would otherwise answer as a bare 500.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ParamSpec, TypeVar, cast

from redis.exceptions import RedisError

from switchyard.config import Settings
from switchyard.errors import ServiceUnavailable
from switchyard.limits import keys as rk
from switchyard.limits import periods
from switchyard.limits.store import connect_redis
from switchyard.schemas.keys import ClientKey

RETRY_AFTER_S = 5.0


class SpendUnavailable(ServiceUnavailable):
    """Valkey/Redis, where spend is counted, did not answer or refused the read. Key records
    live in NATS, not there: callers that show keys may show them without their spend."""

    code = "spend_unavailable"


P = ParamSpec("P")
R = TypeVar("R")


def _read(method: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Turn the client library's failures into :class:`SpendUnavailable`. Only the error's
    type is kept: its text can name the server's address, which is no business of a client."""

    @functools.wraps(method)
    async def read(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(*args, **kwargs)
        except (RedisError, OSError, TimeoutError) as exc:
            raise SpendUnavailable(
                f"spend cannot be read: Valkey/Redis did not answer ({type(exc).__name__}); "
                "try again shortly and check that Valkey/Redis is running",
                retry_after=RETRY_AFTER_S,
            ) from None

    return read


def _nano(value: str | bytes | None) -> int | None:
    """A spend counter's value (none: 0), or None when it is not an integer."""
    try:
        return int(value or 0)
    except ValueError:
        return None


def _usd(nano: int | str | bytes | None) -> float:
    return int(nano or 0) / rk.NANO


class SpendReader:
    def __init__(self, settings: Settings) -> None:
        self._redis = connect_redis(settings, "admin")

    async def close(self) -> None:
        await self._redis.aclose()

    @_read
    async def for_key(self, key: ClientKey) -> dict[str, Any]:
        now = time.time()
        period_id, period_end = periods.current(key.budget_period, now)
        current, total = await self._redis.mget(rk.budget(key.id, period_id), rk.total(key.id))
        spent = _usd(current)
        return {
            "period": key.budget_period,
            "period_spend_usd": round(spent, 9),
            "budget_usd": key.budget_usd,
            "budget_left_usd": round(max(0.0, key.budget_usd - spent), 9)
            if key.budget_usd
            else None,
            "period_resets_at": None if period_end == float("inf") else period_end,
            "total_spend_usd": round(_usd(total), 9),
        }

    async def period_spend(
        self, keys: Sequence[ClientKey], now: float, chunk: int = 500
    ) -> list[int | None]:
        """Each key's spend in its current budget period, in nano-dollars (one MGET per chunk);
        None for a key whose counter is not an integer (someone wrote 1.5 into it): that key
        is unknown, the others are read as usual.

        Raises the client library's errors as they are: the budget watcher, its only caller,
        logs them and keeps its previous counts."""
        current = {p: periods.current(p, now)[0] for p in {k.budget_period for k in keys}}
        names = [rk.budget(k.id, current[k.budget_period]) for k in keys]
        out: list[int | None] = []
        for start in range(0, len(names), chunk):
            values = await self._redis.mget(names[start : start + chunk])
            out += [_nano(v) for v in values]
        return out

    @_read
    async def for_keys(self, keys: list[ClientKey]) -> list[dict[str, Any]]:
        """:meth:`for_key` of a page of keys, in one round trip."""
        now = time.time()
        current = [periods.current(k.budget_period, now) for k in keys]
        async with self._redis.pipeline(transaction=False) as pipe:
            for key, (period_id, _) in zip(keys, current, strict=True):
                pipe.get(rk.budget(key.id, period_id))
                pipe.get(rk.total(key.id))
            found = await pipe.execute()
        out = []
        for i, (key, (_, period_end)) in enumerate(zip(keys, current, strict=True)):
            spent = _usd(found[2 * i])
            out.append(
                {
                    "period": key.budget_period,
                    "period_spend_usd": round(spent, 9),
                    "budget_usd": key.budget_usd,
                    "budget_left_usd": round(max(0.0, key.budget_usd - spent), 9)
                    if key.budget_usd
                    else None,
                    "period_resets_at": None if period_end == float("inf") else period_end,
                    "total_spend_usd": round(_usd(found[2 * i + 1]), 9),
                }
            )
        return out

    @_read
    async def daily(
        self, *, days: int, kinds: tuple[str, ...] = ("key", "model"), per_day: int = 100
    ) -> list[dict[str, Any]]:
        """Daily aggregates (newest day first, costliest first within a day) of the ``per_day``
        costliest keys, models or teams of each day, read from the day rankings: two round
        trips whatever the number of keys."""
        days_back = [periods.day(time.time() - back * 86400) for back in range(_days(days))]
        wanted = [(day, kind) for day in days_back for kind in kinds]
        async with self._redis.pipeline(transaction=False) as pipe:
            for day, kind in wanted:
                pipe.zrevrange(rk.day_rank(day, kind), 0, per_day - 1)
            ranked = await pipe.execute()
        members = [
            (day, kind, m.decode())
            for (day, kind), found in zip(wanted, ranked, strict=True)
            for m in found
        ]
        sums = await self._hashes([(d, k, m) for d, k, m in members])
        return [
            {"day": day, kind: member, **totals}
            for (day, kind, member), totals in zip(members, sums, strict=True)
        ]

    async def _hashes(self, wanted: list[tuple[str, str, str]]) -> list[dict[str, Any]]:
        """The day counters of (day, kind, member) triples, in one round trip (a deployment's
        with its ``provider`` and ``model``, as :func:`_totals` reads them)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for day, kind, member in wanted:
                pipe.hgetall(_day_counter(day, kind, member))
            found = await pipe.execute()
        return [_totals(f) for f in found]

    @_read
    async def ranking(
        self, kind: str, *, days: int, offset: int = 0, limit: int = 50, only: str = ""
    ) -> tuple[list[dict[str, Any]], int]:
        """Members of ``kind`` (key, team, model, deployment) by cost over the last ``days``
        days, with their totals (a deployment's with its provider and model), and how many
        there are. One day reads its ranking page directly; more days are merged by Valkey
        (``ZUNION``), never from raw events."""
        names = [
            rk.day_rank(periods.day(time.time() - b * 86400), kind) for b in range(_days(days))
        ]
        if only:
            picked: list[str] = [only]
            total = 1
        elif len(names) == 1:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.zrevrange(names[0], offset, offset + limit - 1)
                pipe.zcard(names[0])
                page, total = await pipe.execute()
            picked = [m.decode() for m in page]
        else:
            merged = cast(
                list[tuple[bytes, float]], await self._redis.zunion(names, withscores=True)
            )
            ordered = sorted(merged, key=lambda pair: (-pair[1], pair[0]))
            total = len(ordered)
            picked = [m.decode() for m, _ in ordered[offset : offset + limit]]
        day_names = [periods.day(time.time() - b * 86400) for b in range(_days(days))]
        sums = await self._hashes([(d, kind, m) for m in picked for d in day_names])
        rows = []
        for i, member in enumerate(picked):
            per_day = sums[i * len(day_names) : (i + 1) * len(day_names)]
            row: dict[str, Any] = {"name": member, **_served(kind, per_day), **_sum(per_day)}
            row["by_day"] = {d: t["cost_usd"] for d, t in zip(day_names, per_day, strict=True)}
            row["days"] = {d: _counts(t) for d, t in zip(day_names, per_day, strict=True)}
            rows.append(row)
        return rows, total

    @_read
    async def export(self, kind: str, *, days: int, chunk: int = 5000) -> list[dict[str, Any]]:
        """Every member of ``kind`` with spend in the last ``days`` days, costliest first, each
        with the totals of the days it has counters for (oldest first): the CSV export.

        Read from each day's ranking (who had spend that day) and then only those days'
        counters, in pipelines of ``chunk``, so the cost is the rows exported, never members
        times days; nothing is cut (an export of the top N per day dropped the rest)."""
        day_names = [periods.day(time.time() - b * 86400) for b in range(_days(days))][::-1]
        async with self._redis.pipeline(transaction=False) as pipe:
            for day in day_names:
                pipe.zrange(rk.day_rank(day, kind), 0, -1, withscores=True)
            ranked = await pipe.execute()
        cost: dict[str, float] = {}
        present: dict[str, list[str]] = {}
        for day, found in zip(day_names, ranked, strict=True):
            for raw, score in found:
                member = raw.decode()
                cost[member] = cost.get(member, 0.0) + score
                present.setdefault(member, []).append(day)
        order = sorted(cost, key=lambda m: (-cost[m], m))
        wanted = [(d, kind, m) for m in order for d in present[m]]
        sums: list[dict[str, Any]] = []
        for start in range(0, len(wanted), chunk):
            sums += await self._hashes(wanted[start : start + chunk])
        by_member: dict[str, dict[str, dict[str, Any]]] = {m: {} for m in order}
        for (day, _, member), totals in zip(wanted, sums, strict=True):
            by_member[member][day] = totals
        return [
            {
                "name": m,
                **_served(kind, list(by_member[m].values())[::-1]),
                "days": {d: _counts(t) for d, t in by_member[m].items()},
            }
            for m in order
        ]

    @_read
    async def key_models(self, key_id: str, *, days: int) -> list[dict[str, Any]]:
        """The models one key used over the last ``days`` days, costliest first, each with its
        totals and its day totals (as :meth:`ranking`'s rows), read from the per key-and-model
        day counters accounting writes. A day's candidates are the models in that day's model
        ranking (every model spent on that day), so no key pattern is ever scanned."""
        day_names = [periods.day(time.time() - b * 86400) for b in range(_days(days))]
        async with self._redis.pipeline(transaction=False) as pipe:
            for day in day_names:
                pipe.zrange(rk.day_rank(day, "model"), 0, -1)
            ranked = await pipe.execute()
        pairs = [(d, m.decode()) for d, ms in zip(day_names, ranked, strict=True) for m in ms]
        async with self._redis.pipeline(transaction=False) as pipe:
            for day, alias in pairs:
                pipe.hgetall(rk.day_key_model(day, key_id, alias))
            found = await pipe.execute()
        used: dict[str, dict[str, dict[str, Any]]] = {}
        for (day, alias), fields in zip(pairs, found, strict=True):
            if fields:
                used.setdefault(alias, {})[day] = _totals(fields)
        rows = []
        for alias, by_day in used.items():
            per_day = [by_day.get(d, _sum([])) for d in day_names]
            row: dict[str, Any] = {"name": alias, **_sum(per_day)}
            row["by_day"] = {d: t["cost_usd"] for d, t in zip(day_names, per_day, strict=True)}
            row["days"] = dict(zip(day_names, per_day, strict=True))
            rows.append(row)
        return sorted(rows, key=lambda r: (-r["cost_usd"], r["name"]))

    @_read
    async def member_days(self, kind: str, member: str, days: int) -> list[dict[str, Any]]:
        """One key's (team's, model's) day counters, oldest day first."""
        day_names = [periods.day(time.time() - b * 86400) for b in range(_days(days))][::-1]
        sums = await self._hashes([(d, kind, member) for d in day_names])
        return [{"day": d, **_counts(t)} for d, t in zip(day_names, sums, strict=True)]

    @_read
    async def days_total(self, days: int) -> list[dict[str, Any]]:
        """Every model's spend added up per day (oldest first): the chart's total line."""
        day_names = [periods.day(time.time() - b * 86400) for b in range(_days(days))][::-1]
        async with self._redis.pipeline(transaction=False) as pipe:
            for day in day_names:
                pipe.zrange(rk.day_rank(day, "model"), 0, -1)
            models = await pipe.execute()
        wanted = [
            (d, "model", m.decode()) for d, ms in zip(day_names, models, strict=True) for m in ms
        ]
        sums = await self._hashes(wanted)
        out = {d: _sum([]) for d in day_names}
        for (day, _, _), totals in zip(wanted, sums, strict=True):
            out[day] = _sum([out[day], totals])
        return [{"day": d, **out[d]} for d in day_names]

    @_read
    async def today_usd(self) -> float:
        """Spend recorded today (UTC) over every model alias in today's ranking, in dollars:
        the routes deleted since count too, as on the Spend page, its CSV and
        ``switchyard_spend_usd_total`` (read from the current route table, the Overview's
        spend today dropped when a route was deleted)."""
        day = periods.day(time.time())
        ranked = cast(list[bytes], await self._redis.zrange(rk.day_rank(day, "model"), 0, -1))
        aliases = [m.decode() for m in ranked]
        if not aliases:
            return 0.0
        async with self._redis.pipeline(transaction=False) as pipe:  # one round trip
            for alias in aliases:
                pipe.hget(rk.day_model(day, alias), "cost_nano")
            found = await pipe.execute()
        return round(sum(_usd(v) for v in found), 9)


def _days(days: int) -> int:
    return max(1, min(days, rk.DAILY_KEPT_DAYS))


def _day_counter(day: str, kind: str, member: str) -> str:
    if kind == "key":
        return rk.day_key(day, member)
    if kind == "team":
        return rk.day_team(day, member)
    if kind == "deployment":
        return rk.day_deployment(day, member)
    return rk.day_model(day, member)


COUNTERS = ("cost_usd", "prompt_tokens", "completion_tokens", "requests")
# What a deployment's day counters say it is (the usage events' provider and model).
SERVED = ("provider", "model")


def _totals(found: dict[bytes, bytes]) -> dict[str, Any]:
    """A day counter's totals (and a deployment's provider and model, when it has them)."""
    fields = {k.decode(): v for k, v in found.items()}
    out: dict[str, Any] = {
        "cost_usd": round(_usd(fields.get("cost_nano")), 9),
        "prompt_tokens": int(fields.get("prompt_tokens", 0)),
        "completion_tokens": int(fields.get("completion_tokens", 0)),
        "requests": int(fields.get("requests", 0)),
    }
    for name in SERVED:
        if name in fields:
            out[name] = fields[name].decode(errors="replace")
    return out


def _counts(totals: dict[str, Any]) -> dict[str, Any]:
    """A day's totals without what a deployment's counters say it is."""
    return {name: totals[name] for name in COUNTERS}


def _served(kind: str, per_day: list[dict[str, Any]]) -> dict[str, str]:
    """A deployment's ``provider`` and ``model``, from its newest day that names them (empty
    for one whose counters name none); nothing for other kinds."""
    if kind != "deployment":
        return {}
    for totals in per_day:  # newest first
        if totals.get("provider") or totals.get("model"):
            return {name: str(totals.get(name, "")) for name in SERVED}
    return dict.fromkeys(SERVED, "")


def _sum(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "cost_usd": round(sum(r["cost_usd"] for r in rows), 9),
        "prompt_tokens": sum(r["prompt_tokens"] for r in rows),
        "completion_tokens": sum(r["completion_tokens"] for r in rows),
        "requests": sum(r["requests"] for r in rows),
    }
