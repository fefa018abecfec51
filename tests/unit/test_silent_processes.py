"""A process that stops beating without a goodbye stays listed as silent (``switchyard top``,
the admin Overview, ``switchyard_process_up`` 0) until it beats again or is replaced.

An explorer SIGSTOPped accounting and a model-proxy: after 5 minutes the control service
forgot both, `switchyard top` said "processes 8/8 healthy" and SwitchyardProcessDown resolved,
while both stayed frozen and `switchyard status` named them.
"""

from __future__ import annotations

import io
import time

import pytest
from msgspec.structs import replace
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console

from switchyard.config import load_settings
from switchyard.control.monitor import FORGET_SILENT_S, Monitor
from switchyard.runtime import semconv as sc
from switchyard.runtime.cooldowns import Cooldowns
from switchyard.runtime.metrics import Metrics
from switchyard.runtime.reporting import instance_name
from switchyard.schemas.monitor import Heartbeat
from switchyard.top import frame

pytestmark = pytest.mark.unit

T0 = 1_000_000.0
HOUR = 3600.0


def _monitor() -> tuple[Monitor, Metrics]:
    settings = load_settings(None, env={})
    metrics = Metrics("control")
    monitor = Monitor(None, settings, metrics, lambda: settings.route_table, Cooldowns())  # type: ignore[arg-type]
    return monitor, metrics


def _beat(component: str, instance: str, *, host: str = "h1", pid: int = 10) -> Heartbeat:
    return Heartbeat(component=component, instance=instance, host=host, pid=pid, started_at=T0 - 60)


def _up(metrics: Metrics) -> dict[str, float]:
    return {
        sample.labels[sc.INSTANCE]: sample.value
        for family in text_string_to_metric_families(metrics.render().decode())
        if family.name == sc.PROCESS_UP
        for sample in family.samples
    }


def test_a_frozen_process_stays_listed_as_silent_and_down() -> None:
    monitor, metrics = _monitor()
    frozen = _beat("accounting", "accounting")
    live = _beat("head", "head-1")
    now = time.time()
    monitor.add_heartbeat(frozen, now=now - 2 * HOUR)  # its last beat, two hours ago
    monitor.add_heartbeat(live, now=now)
    listed = {p.instance: p for p in monitor.processes(now)}
    assert set(listed) == {"accounting", "head-1"}
    assert not listed["accounting"].healthy
    assert listed["accounting"].last_seen_s >= 2 * HOUR - 1
    # What SwitchyardProcessDown reads: still 0, not gone.
    assert _up(metrics) == {"accounting": 0.0, "head-1": 1.0}
    # `switchyard top` (and the Overview, the same document) do not call the platform healthy.
    console = Console(width=160, record=True, file=io.StringIO())
    console.print(frame(monitor.overview(now), url="http://127.0.0.1:8081"))
    text = console.export_text()
    assert "1/2 healthy" in text
    assert "silent" in text


def test_it_leaves_when_it_beats_again_says_goodbye_or_after_a_day() -> None:
    monitor, _ = _monitor()
    frozen = _beat("modelproxy", "modelproxy-1")
    monitor.add_heartbeat(frozen, now=T0)
    monitor.add_heartbeat(frozen, now=T0 + HOUR)  # SIGCONT: it beats again
    assert [p.healthy for p in monitor.processes(T0 + HOUR)] == [True]
    assert [p.healthy for p in monitor.processes(T0 + 2 * HOUR)] == [False]
    assert monitor.processes(T0 + HOUR + FORGET_SILENT_S + 1) == []
    monitor.add_heartbeat(frozen, now=T0)
    monitor.add_heartbeat(replace(frozen, stopping=True), now=T0 + 1)
    assert monitor.processes(T0 + 2) == []


def test_a_process_named_after_its_pid_leaves_once_its_restart_reports() -> None:
    """Without --instance a restart comes back under a new name (the pid is in it): the old
    row must not stay silent for a day. A sibling that started before the silence is no
    replacement, and a process with a name of its own is only replaced by that name."""
    monitor, _ = _monitor()
    dead = _beat("modelproxy", instance_name("modelproxy", host="h1", pid=100), pid=100)
    sibling = _beat("modelproxy", instance_name("modelproxy", host="h1", pid=200), pid=200)
    named = _beat("head", "head-1", pid=300)
    monitor.add_heartbeat(dead, now=T0)
    monitor.add_heartbeat(named, now=T0)
    monitor.add_heartbeat(sibling, now=T0 + HOUR)  # started at T0 - 60: before the silence
    assert len(monitor.processes(T0 + HOUR)) == 3
    again = _beat("modelproxy", instance_name("modelproxy", host="h1", pid=101), pid=101)
    restarted = replace(again, started_at=T0 + 30)
    elsewhere = replace(
        _beat("head", instance_name("head", host="h1", pid=301), pid=301), started_at=T0 + 30
    )
    monitor.add_heartbeat(restarted, now=T0 + HOUR)
    monitor.add_heartbeat(elsewhere, now=T0 + HOUR)
    left = {p.instance: p.healthy for p in monitor.processes(T0 + HOUR)}
    assert left == {
        sibling.instance: True,
        restarted.instance: True,
        elsewhere.instance: True,
        "head-1": False,  # named: still expected under its own name
    }
