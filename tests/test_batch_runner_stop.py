"""A batch runner's stop is not held by its sweep, even one whose cancel was swallowed.

Seen once in CI (``test_batch_budget``'s runner stop): the runner did not stop within its 10 s
and was killed, and every line it had queued went to the provider meanwhile. Its stop first
cancelled the sweep (every second in the test stacks, store requests back to back) and waited
for it without bound, and only then told the batches to send no more. On Python 3.11, nats-py's
``request`` awaits ``asyncio.wait_for``, which returns a reply that arrived just as the cancel
came and drops the cancel: the sweep went round again, for ever, and the stop with it.

Here the sweep drops the first cancel it gets, as that ``wait_for`` does (the race itself, a
reply and a cancel in one turn of the event loop, cannot be timed from a test). The runner runs
on a real nats-server; it follows no batch records (its sweep is the part under test).
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest

from switchyard.runtime.metrics import Metrics
from switchyard.runtime.worker import Process
from switchyard.workers.batch.service import BatchRunner
from tests.support import jetstream_server, write_settings

pytestmark = pytest.mark.integration


class _SweepDroppingACancel(BatchRunner):
    """A runner whose sweep waits 30 s a pass, and drops the first cancel it gets."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.passes = 0
        self.sweeping = asyncio.Event()

    async def start(self) -> None:  # (the sweep alone: no batch records followed)
        self._sweeper.spawn(self._sweep_forever())
        self.ready = True

    async def sweep(self, now: float) -> tuple[list[str], list[str]]:
        self.passes += 1
        self.sweeping.set()
        if self.passes == 1:
            with contextlib.suppress(asyncio.CancelledError):  # the reply came with the cancel
                await asyncio.sleep(30)
        else:
            await asyncio.sleep(30)
        return [], []


@pytest.mark.asyncio
async def test_a_stop_ends_though_the_sweep_swallowed_its_cancel(tmp_path: Path) -> None:
    settings, _ = write_settings(tmp_path / "home", {"batch": {"sweep_s": 0.2}})
    async with jetstream_server(tmp_path / "js") as (nc, _):
        runner = _SweepDroppingACancel(nc, settings, Process("batch-stop-test", Metrics("batch")))
        await runner.start()
        async with asyncio.timeout(5):
            await runner.sweeping.wait()
        async with asyncio.timeout(8):  # it used to wait for the sweep for ever
            await runner.stop(1.0)
        assert runner.passes == 1  # the sweep ended after the pass it was in
