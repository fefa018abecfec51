"""The at-most-once-per-period rule of repeated warnings, on an injected clock."""

from __future__ import annotations

import pytest

from switchyard.runtime.throttle import Throttle

pytestmark = pytest.mark.unit


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_the_first_call_is_ready_whatever_the_clock_says() -> None:
    # A monotonic clock may start near zero (a fresh boot): the first warning still goes out.
    assert Throttle(10.0, clock=Clock(0.0)).ready() is True
    assert Throttle(10.0, clock=Clock(3.0)).ready() is True


def test_within_the_period_it_is_not_ready_and_after_it_it_is() -> None:
    clock = Clock(100.0)
    throttle = Throttle(10.0, clock=clock)
    assert throttle.ready() is True
    assert throttle.ready() is False  # the same instant
    clock.now = 109.9
    assert throttle.ready() is False
    clock.now = 110.0
    assert throttle.ready() is True


def test_the_period_restarts_from_the_last_true() -> None:
    clock = Clock(0.0)
    throttle = Throttle(10.0, clock=clock)
    assert throttle.ready() is True
    clock.now = 15.0
    assert throttle.ready() is True  # a new period starts at 15, not at 10
    clock.now = 24.0
    assert throttle.ready() is False
    clock.now = 25.0
    assert throttle.ready() is True


def test_false_answers_do_not_push_the_period_back() -> None:
    # Asked every second during a long outage, it still says yes every ten seconds.
    clock = Clock(0.0)
    throttle = Throttle(10.0, clock=clock)
    answers = []
    for second in range(31):
        clock.now = float(second)
        answers.append(throttle.ready())
    assert [s for s, yes in enumerate(answers) if yes] == [0, 10, 20, 30]
