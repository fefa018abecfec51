"""The local stack's restart policy: immediate first restart, doubling waits, a cap."""

from __future__ import annotations

import pytest

from switchyard.stack.supervisor import RestartPolicy

pytestmark = pytest.mark.unit


def test_the_first_restart_is_immediate_then_the_wait_doubles_to_the_cap() -> None:
    policy = RestartPolicy(first_delay_s=1.0, max_delay_s=30.0)
    assert [policy.delay(n) for n in range(1, 9)] == [0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_a_crash_loop_of_days_stays_at_the_cap() -> None:
    # 2 ** 5000 as a float overflows: a loop retried every 30 s for two days must not.
    assert RestartPolicy(max_delay_s=30.0).delay(5000) == 30.0
