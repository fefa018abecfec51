"""The gateway's budget watch counts keys near their budget from the real spend counters.

The key records are handed to the watch as its bucket follower would hand them over; the spend
is read by the gateway's own :class:`SpendReader` from the stack's Valkey, where this test
writes each key's counters first.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import msgspec
import pytest
from nats.js.errors import KeyDeletedError, KeyNotFoundError
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from switchyard.admin.budget_watch import BudgetWatch
from switchyard.admin.spend import SpendReader
from switchyard.admin.spent_writer import SpentWriter, kept_s, rewrite_period
from switchyard.bus import subjects
from switchyard.limits import keys as rk
from switchyard.limits import periods, spent_marks
from switchyard.runtime import semconv as sc
from switchyard.runtime.metrics import Metrics
from switchyard.schemas.keys import KEY_ENCODER, RECORD_PREFIX, ClientKey
from tests.stacks import Stack

pytestmark = pytest.mark.integration


async def test_scan_counts_usable_budgeted_keys_and_exports_no_key_label(
    stack: Stack, counters: Redis
) -> None:
    run = secrets.token_hex(4)  # fresh key ids: the stack's own keys are never touched

    def key(n: int, **fields: Any) -> ClientKey:
        return ClientKey(id=f"key_bw{run}_{n}", hash=f"bw{run}{n}", name=f"k{n}", **fields)

    now = time.time()
    keys = [
        key(1, budget_usd=10.0),  # 85%: near
        key(2, budget_usd=10.0, budget_period="daily"),  # 100%: used up
        key(3, budget_usd=10.0),  # 10%
        key(4),  # no budget: not counted
        key(5, budget_usd=1.0, disabled=True),  # revoked: cannot spend, not counted
        key(6, budget_usd=1.0, expires_at=now - 10),  # expired: same
    ]
    spent = {1: 8.5, 2: 10.0, 3: 1.0, 4: 50.0, 5: 5.0, 6: 5.0}  # dollars this period
    names = [rk.budget(k.id, periods.current(k.budget_period, now)[0]) for k in keys]
    await counters.mset({name: int(spent[n + 1] * rk.NANO) for n, name in enumerate(names)})
    reader = SpendReader(stack.settings)  # logs in as the admin role, like the gateway
    admin = await stack.connect("admin")  # the gateway's identity for the watch's writes
    try:
        metrics = Metrics("gateway")
        watch = BudgetWatch(admin, reader, metrics, interval=30)
        for k in keys:
            watch._on_entry(f"{RECORD_PREFIX}{k.hash}", KEY_ENCODER.encode(k), 1)
        watch._on_entry("unrelated", b"{}", 2)
        # A mark another gateway (or this one before a restart) left for a key whose spend
        # is now under its budget (Valkey lost it, an operator lowered it), and nobody kept
        # since (written longer ago than a writer keeping it lets it get): deleted at the
        # scan, whoever wrote it, once read through the admin identity's import.
        long_ago = time.time() - kept_s(rewrite_period(30)) - 60
        left = SpentWriter(admin, clock=lambda: long_ago)
        left_period, left_until = _period(keys[2].budget_period, now)
        old = spent_marks.SpentMark(
            keys[2].id, keys[2].budget_period, left_period, 10**10, left_until
        )
        await left.sync([old])
        assert await _mark(stack, keys[2].id) is not None
        await watch.scan(now)
        assert await _mark(stack, keys[2].id) is None

        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(metrics.render().decode())
            for s in family.samples
            if s.name.startswith("switchyard_keys")
        }
        assert samples == {
            (sc.KEYS_WITH_BUDGET, ()): 3,
            (sc.KEYS_NEAR_BUDGET, ((sc.THRESHOLD, "0.8"),)): 2,
            (sc.KEYS_NEAR_BUDGET, ((sc.THRESHOLD, "1"),)): 1,
        }

        # The used-up key is marked for the heads (NATS callers), the others are not.
        assert list(watch.marks.written) == [keys[1].id]
        period_id, until = _period("daily", now)
        marked = await _mark(stack, keys[1].id)
        assert marked is not None
        assert abs(marked.written_at - time.time()) < 60  # stamped when written
        assert marked.keep_s == spent_marks.REWRITE_S  # rewritten every 10 min at 30 s scans
        assert msgspec.structs.replace(marked, written_at=0.0, keep_s=0.0) == spent_marks.SpentMark(
            keys[1].id, "daily", period_id, spent=int(10.0 * rk.NANO), until=until
        )

        # A deleted key leaves the count at the next scan, and its mark is deleted.
        watch._on_entry(f"{RECORD_PREFIX}{keys[1].hash}", None, 3)
        await watch.scan(now)
        assert (watch.with_budget, watch.near) == (2, {0.8: 1, 1.0: 0})
        assert watch.marks.written == {}
        assert await _mark(stack, keys[1].id) is None
    finally:
        await reader.close()
        await admin.close()
        await counters.delete(*names)


def _period(period: str, now: float) -> tuple[str, float | None]:
    period_id, end = periods.current(period, now)
    return period_id, None if end == float("inf") else end


async def _mark(stack: Stack, key_id: str) -> spent_marks.SpentMark | None:
    """The key's mark as a head reads it (CORE's bucket), None when there is none."""
    head = await stack.connect("head")
    try:
        kv = await head.jetstream(timeout=5).key_value(subjects.KEY_SPENT_BUCKET)
        try:
            entry = await kv.get(spent_marks.entry_name(key_id))
        except (KeyNotFoundError, KeyDeletedError):
            return None
        assert entry.value is not None
        return spent_marks.decode(entry.value)
    finally:
        await head.close()
