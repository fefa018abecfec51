"""The time a deployment's calls take lately, below which a request is not started."""

from __future__ import annotations

from switchyard.workers.modelproxy.pace import MIN_SAMPLES, STALE_S, WINDOW, CallTimes


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_no_floor_until_enough_calls_were_seen() -> None:
    times = CallTimes()
    for _ in range(MIN_SAMPLES - 1):
        times.record("dep", "default", False, 2.0)
    assert times.floor("dep", "default", False) == 0.0
    times.record("dep", "default", False, 2.0)
    assert times.floor("dep", "default", False) == 2.0


def test_the_floor_is_a_quick_call_not_a_typical_one() -> None:
    """Nine in ten recent calls took longer: a request with less time left is hopeless; one
    with more may be among the quick ones, so it is started."""
    times = CallTimes()
    for n in range(WINDOW):
        times.record("dep", "default", False, 1.0 + n / 10)  # 1.0 s .. 7.3 s
    assert 1.5 <= times.floor("dep", "default", False) <= 1.7


def test_kinds_of_call_are_apart() -> None:
    """Streams, priorities (batch lines must not make interactive calls look slow) and
    deployments each have their own floor."""
    times = CallTimes()
    for _ in range(MIN_SAMPLES):
        times.record("dep", "default", True, 20.0)
        times.record("dep", "batch", False, 60.0)
        times.record("other", "default", False, 0.1)
    assert times.floor("dep", "default", True) == 20.0
    assert times.floor("dep", "default", False) == 0.0
    assert times.floor("dep", "batch", False) == 60.0
    assert times.floor("other", "default", False) == 0.1
    times.forget("dep")
    assert times.floor("dep", "default", True) == 0.0
    assert times.floor("dep", "batch", False) == 0.0
    assert times.floor("other", "default", False) == 0.1


def test_the_floor_follows_a_deployment_that_got_faster() -> None:
    times = CallTimes()
    for _ in range(WINDOW):
        times.record("dep", "default", False, 5.0)
    for _ in range(WINDOW):
        times.record("dep", "default", False, 0.5)
    assert times.floor("dep", "default", False) == 0.5


def test_a_floor_no_call_confirmed_lately_is_dropped() -> None:
    """Learnt in a slow spell, a floor refusing every short-deadline request would never see
    the fast calls that could lower it: without a recent success it no longer applies."""
    clock = Clock()
    times = CallTimes(clock)
    for _ in range(MIN_SAMPLES):
        times.record("dep", "default", False, 30.0)
    clock.now += STALE_S - 1
    assert times.floor("dep", "default", False) == 30.0
    clock.now += 2
    assert times.floor("dep", "default", False) == 0.0
