"""Keys near their budget are counted over every key and exported without a per-key label."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, cast

import pytest
from prometheus_client.parser import text_string_to_metric_families

from switchyard.admin.budget_watch import BudgetWatch, count_near
from switchyard.limits import keys as rk
from switchyard.limits import periods
from switchyard.runtime import semconv as sc
from switchyard.runtime.metrics import Metrics
from switchyard.schemas.keys import KEY_ENCODER, RECORD_PREFIX, ClientKey

pytestmark = pytest.mark.unit


class FakeSpend:
    """Spend per Redis counter name, as the admin role would read it."""

    def __init__(self, by_counter: dict[str, float]) -> None:
        self.by_counter = by_counter
        self.asked: list[str] = []

    async def period_spend(self, keys: Sequence[ClientKey], now: float) -> list[int]:
        names = [rk.budget(k.id, periods.current(k.budget_period, now)[0]) for k in keys]
        self.asked += [k.id for k in keys]
        return [int(self.by_counter.get(n, 0) * rk.NANO) for n in names]


def _key(n: int, **fields: Any) -> ClientKey:
    return ClientKey(id=f"key_{n}", hash=f"h{n}", name=f"k{n}", **fields)


def test_count_near_counts_each_threshold_reached() -> None:
    spent = [int(x * rk.NANO) for x in (0.5, 8.0, 9.99, 10.0, 12.0)]
    assert count_near([10.0] * 5, spent, (0.8, 1.0)) == {0.8: 4, 1.0: 2}
    assert count_near([], [], (0.8, 1.0)) == {0.8: 0, 1.0: 0}


async def test_scan_counts_usable_budgeted_keys_and_exports_no_key_label() -> None:
    now = time.time()
    keys = [
        _key(1, budget_usd=10.0),  # 85%: near
        _key(2, budget_usd=10.0, budget_period="daily"),  # 100%: used up
        _key(3, budget_usd=10.0),  # 10%
        _key(4),  # no budget: not read at all
        _key(5, budget_usd=1.0, disabled=True),  # revoked: cannot spend, not counted
        _key(6, budget_usd=1.0, expires_at=now - 10),  # expired: same
    ]
    monthly = periods.current("monthly", now)[0]
    daily = periods.current("daily", now)[0]
    spend = FakeSpend(
        {
            rk.budget("key_1", monthly): 8.5,
            rk.budget("key_2", daily): 10.0,
            rk.budget("key_3", monthly): 1.0,
            rk.budget("key_5", monthly): 5.0,
            rk.budget("key_6", monthly): 5.0,
        }
    )
    metrics = Metrics("gateway")
    watch = BudgetWatch(cast(Any, None), cast(Any, spend), metrics, interval=30)
    for key in keys:
        watch._on_entry(f"{RECORD_PREFIX}{key.hash}", KEY_ENCODER.encode(key), 1)
    watch._on_entry("unrelated", b"{}", 2)
    await watch.scan(now)
    assert sorted(spend.asked) == ["key_1", "key_2", "key_3"]

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

    # A deleted key leaves the count at the next scan.
    watch._on_entry(f"{RECORD_PREFIX}h2", None, 3)
    await watch.scan(now)
    assert (watch.with_budget, watch.near) == (2, {0.8: 1, 1.0: 0})
