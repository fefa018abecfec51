"""Reading spend back for people: per key (current budget period, total) and per day.

Uses the ``admin`` Valkey role, which may only read Switchyard's keys. Amounts are stored in
nano-dollars and shown in dollars.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from switchyard.config import Settings
from switchyard.limits import keys as rk
from switchyard.limits import periods
from switchyard.limits.store import connect_redis
from switchyard.schemas.keys import ClientKey


def _usd(nano: int | str | bytes | None) -> float:
    return int(nano or 0) / rk.NANO


class SpendReader:
    def __init__(self, settings: Settings) -> None:
        self._redis = connect_redis(settings, "admin")

    async def close(self) -> None:
        await self._redis.aclose()

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
    ) -> list[int]:
        """Each key's spend in its current budget period, in nano-dollars (one MGET per chunk)."""
        current = {p: periods.current(p, now)[0] for p in {k.budget_period for k in keys}}
        names = [rk.budget(k.id, current[k.budget_period]) for k in keys]
        out: list[int] = []
        for start in range(0, len(names), chunk):
            values = await self._redis.mget(names[start : start + chunk])
            out += [int(v or 0) for v in values]
        return out

    async def daily(
        self, *, days: int, key_ids: list[str], aliases: list[str]
    ) -> list[dict[str, Any]]:
        """Daily aggregates (newest first) for the given keys and model aliases."""
        now = time.time()
        names: list[tuple[str, str, str, str]] = []  # (day, kind, id, Redis key)
        for back in range(max(1, min(days, 90))):
            day = periods.day(now - back * 86400)
            names += [(day, "key", k, rk.day_key(day, k)) for k in key_ids]
            names += [(day, "model", a, rk.day_model(day, a)) for a in aliases]
        async with self._redis.pipeline(transaction=False) as pipe:  # one round trip
            for *_, name in names:
                pipe.hgetall(name)
            results = await pipe.execute()
        rows: list[dict[str, Any]] = []
        for (day, kind, ident, _), found in zip(names, results, strict=True):
            if not found:
                continue
            fields = {k.decode(): int(v) for k, v in found.items()}
            rows.append(
                {
                    "day": day,
                    kind: ident,
                    "cost_usd": round(_usd(fields.get("cost_nano")), 9),
                    "prompt_tokens": fields.get("prompt_tokens", 0),
                    "completion_tokens": fields.get("completion_tokens", 0),
                    "requests": fields.get("requests", 0),
                }
            )
        return rows

    async def today_usd(self, aliases: list[str]) -> float:
        """Spend recorded today (UTC) across the given model aliases, in dollars."""
        if not aliases:
            return 0.0
        day = periods.day(time.time())
        async with self._redis.pipeline(transaction=False) as pipe:  # one round trip
            for alias in aliases:
                pipe.hget(rk.day_model(day, alias), "cost_nano")
            found = await pipe.execute()
        return round(sum(_usd(v) for v in found), 9)
