"""Counting keys near their budget (the scan itself runs on a real Valkey: test_budget_watch)."""

from __future__ import annotations

import pytest

from switchyard.admin.budget_watch import count_near
from switchyard.limits import keys as rk

pytestmark = pytest.mark.unit


def test_count_near_counts_each_threshold_reached() -> None:
    spent = [int(x * rk.NANO) for x in (0.5, 8.0, 9.99, 10.0, 12.0)]
    assert count_near([10.0] * 5, spent, (0.8, 1.0)) == {0.8: 4, 1.0: 2}
    assert count_near([], [], (0.8, 1.0)) == {0.8: 0, 1.0: 0}
