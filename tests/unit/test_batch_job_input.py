"""How a batch job treats its input failing part of the way: the lines already sent finish
(they may be running at the provider; cancelled, they would run and be paid for again on the
next pass), nothing more is sent, and the failure reaches the runner, which tries again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any, cast

import pytest

from switchyard.config import BatchSettings
from switchyard.errors import BusError
from switchyard.schemas import batches as b
from switchyard.workers.batch.inputs import BatchInput
from switchyard.workers.batch.job import Job
from switchyard.workers.batch.slots import FairSlots

RECORD = b.BatchRecord(
    batch=b.Batch(
        id="batch_x",
        endpoint="/v1/chat/completions",
        input_file_id="file-x",
        completion_window="24h",
        status="in_progress",
        created_at=0,
    ),
    owner="o",
    key_id="k",
    key_hash="h",
)


class TornInput(BatchInput):
    """An input whose read breaks after ``good`` lines (a chunk that never comes)."""

    def __init__(self, good: int) -> None:
        self._good = good

    async def lines(self) -> AsyncGenerator[tuple[int, b.BatchLine]]:
        for index in range(1, self._good + 1):
            yield index, b.BatchLine(custom_id=f"r{index}", method="POST", url="", body={})
        raise BusError("object file-x stopped arriving: TimeoutError")


class SlowLines(Job):
    """Lines that take a while, as at a provider; records which ended and how."""

    finished: list[int]
    cancelled_lines: list[int]
    started: list[int]
    takes_s = 0.05

    async def _line(self, index: int, line: b.BatchLine) -> None:
        self.started.append(index)
        try:
            await asyncio.sleep(self.takes_s)
        except asyncio.CancelledError:
            self.cancelled_lines.append(index)
            raise
        self.finished.append(index)


def _job(source: BatchInput, slots: int) -> SlowLines:
    job = SlowLines(
        RECORD,
        source,
        10,
        store=cast(Any, None),  # never reached: _line is the test's
        llm=cast(Any, None),
        settings=BatchSettings(),
        slots=FairSlots(slots),
        cancelled=lambda: False,
        on_line=lambda ok: None,
    )
    job.finished, job.cancelled_lines, job.started = [], [], []
    return job


async def test_lines_in_flight_finish_when_the_input_breaks() -> None:
    job = _job(TornInput(good=3), slots=8)
    with pytest.raises(BusError, match="stopped arriving"):
        await job.run({2: True})  # line 2 has its answer already
    assert sorted(job.finished) == [1, 3]
    assert job.cancelled_lines == []


async def test_a_cancelled_job_still_cancels_its_lines() -> None:
    job = _job(TornInput(good=3), slots=8)
    job.takes_s = 30.0  # still running when cancelled, however slow the machine
    run = asyncio.ensure_future(job.run({}))
    for _ in range(500):  # every line sent (a fixed 10 ms was too short under CI load)
        if len(job.started) == 3:
            break
        await asyncio.sleep(0.01)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert sorted(job.cancelled_lines) == [1, 2, 3]
    assert job.finished == []
