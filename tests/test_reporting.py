"""Heartbeats on a real nats-server: a monitor that subscribes just after a process started (a
whole stack starts at once) still hears it within its first seconds, not one interval later."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from nats.aio.msg import Msg

from switchyard.bus import subjects
from switchyard.runtime.reporting import HEARTBEAT_S, Reporter
from switchyard.schemas.monitor import HEARTBEAT
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
