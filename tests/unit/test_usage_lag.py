"""Accounting's backlog as control reports it (``control/usage_lag.py``): stalled seconds count
from when batches started waiting or accounting last applied one, whichever is later."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from switchyard.config.loader import load_settings
from switchyard.control.monitor import Monitor
from switchyard.control.usage_lag import UsageLag
from switchyard.runtime import semconv as sc
from switchyard.runtime.cooldowns import Cooldowns
from switchyard.runtime.metrics import Metrics
from switchyard.schemas.routing import RouteTable

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _exported(metrics: Metrics) -> dict[str, float]:
    text = metrics.render().decode()
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name in (sc.USAGE_WAITING, sc.USAGE_STALLED)
    }


def test_nothing_is_exported_before_the_first_read() -> None:
    metrics = Metrics("control")
    UsageLag(None, metrics)  # type: ignore[arg-type]  # never asked: nothing is read here
    assert _exported(metrics) == {}


def test_stalled_counts_while_batches_wait_and_none_is_applied() -> None:
    clock, metrics = Clock(), Metrics("control")
    lag = UsageLag(None, metrics, clock)  # type: ignore[arg-type]
    lag.observe(0, 10)
    assert _exported(metrics) == {sc.USAGE_WAITING: 0.0, sc.USAGE_STALLED: 0.0}
    lag.observe(2, 10)  # batches start waiting
    clock.now += 30
    lag.observe(5, 10)  # more, and none applied
    assert _exported(metrics) == {sc.USAGE_WAITING: 5.0, sc.USAGE_STALLED: 30.0}
    clock.now += 5
    lag.observe(4, 11)  # one applied: a slow accounting, not a stuck one
    clock.now += 2
    assert lag.stalled_s() == 2.0
    lag.observe(0, 15)  # caught up
    clock.now += 60
    assert _exported(metrics) == {sc.USAGE_WAITING: 0.0, sc.USAGE_STALLED: 0.0}


async def test_a_refused_read_is_tried_again_later_not_every_second() -> None:
    """A NATS config older than this version refuses control's read, which then waits out its
    2 s timeout: every second, that would hold the queues' reading back too."""
    table = RouteTable()
    settings = load_settings(None, env={})
    monitor = Monitor(None, settings, Metrics("control"), lambda: table, Cooldowns())  # type: ignore[arg-type]
    tries: list[int] = []

    async def refused() -> None:
        tries.append(1)
        raise TimeoutError

    monitor.usage.collect = refused  # type: ignore[method-assign]
    await monitor._collect_usage()
    await monitor._collect_usage()  # a second later, in the collect loop
    assert len(tries) == 1
    monitor._usage_retry_at = 0.0  # USAGE_RETRY_S later
    await monitor._collect_usage()
    assert len(tries) == 2
