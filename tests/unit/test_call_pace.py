"""The time a deployment's calls take lately, below which a request is not started."""

from __future__ import annotations

from switchyard.workers.modelproxy.pace import MIN_SAMPLES, WINDOW, CallTimes


def test_no_floor_until_enough_calls_were_seen() -> None:
    times = CallTimes()
    for _ in range(MIN_SAMPLES - 1):
        times.record("dep", False, 2.0)
    assert times.floor("dep", False) == 0.0
    times.record("dep", False, 2.0)
    assert times.floor("dep", False) == 2.0


def test_the_floor_is_a_quick_call_not_a_typical_one() -> None:
    """Nine in ten recent calls took longer: a request with less time left is hopeless; one
    with more may be among the quick ones, so it is started."""
    times = CallTimes()
    for n in range(WINDOW):
        times.record("dep", False, 1.0 + n / 10)  # 1.0 s .. 7.3 s
    assert 1.5 <= times.floor("dep", False) <= 1.7


def test_streams_and_whole_answers_and_deployments_are_apart() -> None:
    times = CallTimes()
    for _ in range(MIN_SAMPLES):
        times.record("dep", True, 20.0)
        times.record("other", False, 0.1)
    assert times.floor("dep", True) == 20.0
    assert times.floor("dep", False) == 0.0
    assert times.floor("other", False) == 0.1
    times.forget("dep")
    assert times.floor("dep", True) == 0.0


def test_the_floor_follows_a_deployment_that_got_faster() -> None:
    times = CallTimes()
    for _ in range(WINDOW):
        times.record("dep", False, 5.0)
    for _ in range(WINDOW):
        times.record("dep", False, 0.5)
    assert times.floor("dep", False) == 0.5
