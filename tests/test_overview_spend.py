"""The Overview's (and ``switchyard top``'s) "spend today" is the whole day's spend.

It was read for the aliases of the current route table only: deleting a route took its spend
out of today's total, while the Spend page, its CSV and ``switchyard_spend_usd_total`` kept it.
Here a model alias that is in no route (a route deleted after it was spent on) gets today's
counters as accounting writes them (its day counter and its place in the day's model
ranking), and the Overview's spend today grows by its cost.
"""

from __future__ import annotations

import secrets
import time

import pytest
from redis.asyncio import Redis

from switchyard.limits import keys as rk
from switchyard.limits import periods
from tests.stacks import Stack

pytestmark = pytest.mark.integration


async def test_spend_today_keeps_a_deleted_routes_spend(stack: Stack, counters: Redis) -> None:
    routes = (await stack.admin("GET", "/routes")).json()
    gone = f"deleted-{secrets.token_hex(4)}"
    assert gone not in str(routes)
    day = periods.day(time.time())
    before = (await stack.admin("GET", "/overview")).json()["spend_today_usd"]
    assert before is not None
    cost = int(1.25 * rk.NANO)
    try:
        await counters.hset(rk.day_model(day, gone), mapping={"cost_nano": cost, "requests": 1})
        await counters.zincrby(rk.day_rank(day, "model"), cost, gone)
        after = (await stack.admin("GET", "/overview")).json()["spend_today_usd"]
    finally:
        await counters.delete(rk.day_model(day, gone))
        await counters.zrem(rk.day_rank(day, "model"), gone)
    assert after == pytest.approx(before + 1.25)
