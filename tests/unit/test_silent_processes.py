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
    monitor.add_heartbeat(sibling, now=T0)  # heard before the silence
    monitor.add_heartbeat(sibling, now=T0 + HOUR)
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


def _pod(component: str, pod: str, *, pid: int = 1, started_at: float = T0 - 60) -> Heartbeat:
    """A process started without --instance in a pod (or container) named ``pod``."""
    name = instance_name(component, host=pod, pid=pid)
    return Heartbeat(component=component, instance=name, host=pod, pid=pid, started_at=started_at)


def test_a_pod_rescheduled_on_another_host_replaces_the_lost_one() -> None:
    """After a node loss, an eviction or `kubectl delete --force` the new pod has a new name
    (its host): its process still replaces the lost one, whatever either host's clock says."""
    monitor, metrics = _monitor()
    now = time.time()
    lost = _pod("modelproxy", "modelproxy-7d9f-abcde", started_at=now - HOUR)
    monitor.add_heartbeat(lost, now=now - 60)  # its last beat, a minute ago
    # The new node's clock runs ten minutes behind: its process "started" before the silence.
    new = _pod("modelproxy", "modelproxy-7d9f-fghij", started_at=now - 600)
    monitor.add_heartbeat(new, now=now)
    assert [(p.instance, p.healthy) for p in monitor.processes(now)] == [(new.instance, True)]
    assert _up(metrics) == {new.instance: 1.0}


def test_a_sibling_heard_before_the_silence_never_replaces_a_frozen_process() -> None:
    """Its host's clock ahead (a start "after" the silence) changes nothing: control's own
    clock says when each process was first heard."""
    monitor, _ = _monitor()
    frozen = _pod("accounting", "node-1", pid=100, started_at=T0 - 60)
    ahead = _pod("accounting", "node-1", pid=200, started_at=T0 + 7200)
    monitor.add_heartbeat(frozen, now=T0)
    monitor.add_heartbeat(ahead, now=T0)
    monitor.add_heartbeat(ahead, now=T0 + HOUR)
    listed = {p.instance: p.healthy for p in monitor.processes(T0 + HOUR)}
    assert listed == {frozen.instance: False, ahead.instance: True}


def test_each_newcomer_replaces_one_silent_process_at_most() -> None:
    """Two pods lost with their node, one back: one row stays silent (one process is still
    missing) until a second comes, on any later look too."""
    monitor, _ = _monitor()
    lost = [_pod("modelproxy", f"modelproxy-old-{n}", pid=1) for n in (1, 2)]
    for beat in lost:
        monitor.add_heartbeat(beat, now=T0)
    first = _pod("modelproxy", "modelproxy-new-1")
    monitor.add_heartbeat(first, now=T0 + 30)
    for moment in (T0 + 30, T0 + 31, T0 + HOUR):
        monitor.add_heartbeat(first, now=moment)
        listed = {p.instance: p.healthy for p in monitor.processes(moment)}
        assert sorted(listed.values()) == [False, True], moment
        assert first.instance in listed
    second = _pod("modelproxy", "modelproxy-new-2")
    monitor.add_heartbeat(second, now=T0 + HOUR + 1)
    listed = {p.instance: p.healthy for p in monitor.processes(T0 + HOUR + 1)}
    assert listed == {first.instance: True, second.instance: True}


def test_a_successor_counted_once_is_not_counted_again_later() -> None:
    """Two processes of a component die ten seconds apart and one comes back: once it was
    counted as the first one's successor (its row gone), a later look must not count it again
    for the second, whose row stays silent."""
    monitor, _ = _monitor()
    lost = _pod("head", "head-old")
    peer = _pod("head", "head-peer")
    monitor.add_heartbeat(lost, now=T0)  # its last beat
    monitor.add_heartbeat(peer, now=T0)
    monitor.add_heartbeat(peer, now=T0 + 10)  # its last beat
    new = _pod("head", "head-new")
    monitor.add_heartbeat(new, now=T0 + 20)
    listed = {p.instance: p.healthy for p in monitor.processes(T0 + 20)}
    assert listed == {peer.instance: True, new.instance: True}  # the peer is not silent yet
    monitor.add_heartbeat(new, now=T0 + HOUR)
    listed = {p.instance: p.healthy for p in monitor.processes(T0 + HOUR)}
    assert listed == {peer.instance: False, new.instance: True}


def test_processes_heard_as_control_starts_are_no_successors_of_each_other() -> None:
    """A restarted control service hears every running process within a few seconds, in the
    order their beats fall: one that dies right after its first beat there is not replaced by
    a peer whose beat merely came a second later."""
    monitor, _ = _monitor()
    dies = _pod("modelproxy", "modelproxy-a")
    peer = _pod("modelproxy", "modelproxy-b")
    monitor.add_heartbeat(dies, now=T0 + 1)  # control's first beat heard, and its last
    monitor.add_heartbeat(peer, now=T0 + 3)
    monitor.add_heartbeat(peer, now=T0 + HOUR)
    listed = {p.instance: p.healthy for p in monitor.processes(T0 + HOUR)}
    assert listed == {dies.instance: False, peer.instance: True}
