"""Heartbeats on a real nats-server: a monitor that subscribes just after a process started (a
whole stack starts at once) still hears it within its first seconds, not one interval later."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

import pytest
from msgspec.structs import replace
from nats.aio.msg import Msg

from switchyard.bus import subjects
from switchyard.config import load_settings
from switchyard.control.monitor import Monitor
from switchyard.runtime.cooldowns import Cooldowns
from switchyard.runtime.metrics import Metrics
from switchyard.runtime.reporting import HEARTBEAT_S, Reporter
from switchyard.schemas.monitor import HEARTBEAT, Heartbeat
from switchyard.workers.modelproxy.heartbeat import Heartbeats
from tests.support import jetstream_server

pytestmark = pytest.mark.integration


async def test_a_monitor_that_subscribes_late_hears_a_new_process_within_its_first_seconds(
    tmp_path: Path,
) -> None:
    async with jetstream_server(tmp_path) as (nc, _):
        reporter = Reporter(nc, "head", "head-1", lambda: True)
        started = time.monotonic()
        reporter.start()
        try:
            await asyncio.sleep(0.3)  # the first beat went out before anyone listened
            heard: asyncio.Queue[bytes] = asyncio.Queue()

            async def on_beat(msg: Msg) -> None:
                await heard.put(msg.data)

            await nc.subscribe(subjects.process_stats("head", "head-1"), cb=on_beat)
            beat = HEARTBEAT.decode(await asyncio.wait_for(heard.get(), HEARTBEAT_S))
            waited = time.monotonic() - started
        finally:
            await reporter.stop()
    assert (beat.component, beat.instance, beat.ready) == ("head", "head-1", True)
    # One interval would be 5 s after the start; the startup beats come well before.
    assert waited < HEARTBEAT_S / 2, waited


async def test_an_edge_answering_requests_beats_every_second_and_idle_slowly(
    tmp_path: Path,
) -> None:
    """The overview's request totals come from the edges' beats: at the idle pace they trailed
    the per-deployment rows by seconds."""
    answered = {"2xx": 0}
    async with jetstream_server(tmp_path) as (nc, _):
        beats: list[tuple[float, int]] = []

        async def on_beat(msg: Msg) -> None:
            beats.append((time.monotonic(), sum(HEARTBEAT.decode(msg.data).requests.values())))

        await nc.subscribe(subjects.process_stats("tail", "tail-1"), cb=on_beat)
        await nc.flush()
        reporter = Reporter(
            nc, "tail", "tail-1", lambda: True, requests=lambda: answered, interval=3.0
        )
        reporter.start()
        try:
            await asyncio.sleep(4.0)  # the start-up beats (0, 0.5, 1.5, 3.5 s), all idle
            busy_from = time.monotonic()
            while time.monotonic() - busy_from < 6.0:  # traffic
                answered["2xx"] += 1
                await asyncio.sleep(0.1)
            idle_from = time.monotonic()
            await asyncio.sleep(8.5)  # beats about 1.5, 4.5 and 7.5 s after the last count
        finally:
            await reporter.stop()
    busy = [t for t, _ in beats if busy_from + 3.2 < t < idle_from]  # after the first busy beat
    gaps = [b - a for a, b in itertools.pairwise(busy)]
    assert len(gaps) >= 1, beats
    assert all(gap < 1.6 for gap in gaps), gaps
    idle = [t for t, _ in beats if t > idle_from + 1.2]  # from the first beat with no change
    idle_gaps = [b - a for a, b in itertools.pairwise(idle)]
    assert idle_gaps, beats
    assert all(gap > 2.5 for gap in idle_gaps), idle_gaps


async def test_a_process_stopping_on_purpose_leaves_the_table_at_once(tmp_path: Path) -> None:
    """A SIGTERM'd process sent no last word: it stayed in the table as silent for five
    minutes and `switchyard_process_up` said 0, so every rollout and scale-down paged as
    SwitchyardProcessDown. Its last beat now says it is stopping, and it leaves the table."""
    settings = load_settings(None, env={})
    async with jetstream_server(tmp_path) as (nc, _):
        monitor = Monitor(
            nc, settings, Metrics("control"), lambda: settings.route_table, Cooldowns()
        )
        beats: list[Heartbeat] = []

        async def on_beat(msg: Msg) -> None:
            beat = HEARTBEAT.decode(msg.data)
            beats.append(beat)
            monitor.add_heartbeat(beat)

        await nc.subscribe(subjects.process_stats("head", "head-9"), cb=on_beat)
        await nc.flush()
        reporter = Reporter(nc, "head", "head-9", lambda: True)
        reporter.start()
        await asyncio.sleep(0.2)
        assert [p.instance for p in monitor.processes()] == ["head-9"]
        await reporter.stop()
        await reporter.stop()  # idempotent: one goodbye
        await nc.flush()
        await asyncio.sleep(0.1)
    assert [b.stopping for b in beats][-2:] == [False, True]
    assert monitor.processes() == []


async def test_a_model_proxys_calls_in_flight_reach_the_monitor_in_its_beats(
    tmp_path: Path,
) -> None:
    """``switchyard top``'s age of the oldest call in flight: control read each busy queue's
    oldest stored request (a whole request, one read after another, per deployment per
    second), and counted its queue wait. Now the model-proxy's beat carries its calls' ages
    (from when it began serving each, and since its last chunk), sent within a second of a
    call's start and every second while calls are in flight."""
    settings = load_settings(None, env={})
    async with jetstream_server(tmp_path) as (nc, _):
        monitor = Monitor(
            nc, settings, Metrics("control"), lambda: settings.route_table, Cooldowns()
        )
        beats: list[Heartbeat] = []

        async def on_beat(msg: Msg) -> None:
            beat = HEARTBEAT.decode(msg.data)
            beats.append(beat)
            monitor.add_heartbeat(beat)

        await nc.subscribe(subjects.process_stats("modelproxy", "mp-1"), cb=on_beat)
        await nc.flush()
        calls = Heartbeats(nc, keepalive_s=15.0, progress_s=10.0)  # (its ticker not started)
        reporter = Reporter(nc, "modelproxy", "mp-1", lambda: True, calls=calls.ages)
        reporter.start()
        loop = asyncio.get_running_loop()
        try:
            await asyncio.sleep(4.0)  # past the start-up beats: the idle pace (5 s) now
            msg = Msg(_client=nc, subject="llm.v1.dispatch.p/m", reply="", data=b"{}")
            entry = calls.track("r", msg, "p/m")
            heard = len(beats)
            await asyncio.sleep(1.5)  # a call began: the next beat comes within a second
            assert len(beats) > heard
            assert set(beats[-1].calls) == {"p/m"}
            await asyncio.sleep(1.5)
            ages = monitor._calls(time.time())["p/m"]
            assert ages.oldest_s >= 2.0
            assert ages.silent_s >= 2.0  # no chunk went to its caller yet
            entry.touch(loop.time())
            await asyncio.sleep(1.2)
            ages = monitor._calls(time.time())["p/m"]
            assert ages.oldest_s >= 3.0
            assert ages.silent_s < 1.2
            calls.untrack(entry)
            await asyncio.sleep(1.2)
            assert monitor._calls(time.time()) == {}
        finally:
            await reporter.stop()


def test_a_replicas_goodbye_leaves_a_sibling_with_the_same_name() -> None:
    """Compose and Kubernetes start replicas without --instance: every model-proxy reports
    as modelproxy/modelproxy. One stopping must not remove the row a live one keeps."""
    settings = load_settings(None, env={})
    monitor = Monitor(None, settings, Metrics("control"), lambda: settings.route_table, Cooldowns())  # type: ignore[arg-type]
    live = Heartbeat(
        component="modelproxy", instance="modelproxy", host="pod-a", pid=1, started_at=1.0
    )
    going = Heartbeat(
        component="modelproxy", instance="modelproxy", host="pod-b", pid=1, started_at=2.0
    )
    monitor.add_heartbeat(going)
    monitor.add_heartbeat(live)  # the latest beat under that name is pod-a's
    monitor.add_heartbeat(replace(going, stopping=True))
    assert [p.host for p in monitor.processes()] == ["pod-a"]
    monitor.add_heartbeat(replace(live, stopping=True))
    assert monitor.processes() == []
