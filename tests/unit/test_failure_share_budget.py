"""The write budget of the shared wrong-token counts: a flood of wrong tokens, from as many
addresses as anyone likes, makes at most WRITE_RATE writes a second (a burst of WRITE_BURST)
on a replica."""

from __future__ import annotations

import pytest

from switchyard.admin.ui.failure_share import WriteBudget

pytestmark = pytest.mark.unit


def test_a_flood_gets_the_burst_then_the_rate() -> None:
    budget = WriteBudget(rate=10.0, burst=30.0)
    start = 1000.0
    budget.take(start)  # the clock starts here
    taken = sum(budget.take(start) for _ in range(1000))
    assert taken == 29  # the burst (one spent above)
    assert not budget.take(start + 0.05)
    taken = sum(budget.take(start + 10.0) for _ in range(1000))
    assert taken == 30  # refilled to the burst, not to 100
    taken = sum(budget.take(start + 10.0 + t / 100) for t in range(100))  # one second more
    assert 9 <= taken <= 11
