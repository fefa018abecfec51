"""The task supervisor: every task owned, bounded when asked, drained or cancelled, none leaked."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading

import pytest

from switchyard.runtime.tasks import SupervisorClosed, TaskSupervisor, outlast

pytestmark = pytest.mark.unit


async def test_drain_lets_quick_work_finish_and_cancels_the_rest() -> None:
    tasks = TaskSupervisor("t")
    finished: list[str] = []
    cancelled: list[str] = []

    async def work(name: str, seconds: float) -> None:
        try:
            await asyncio.sleep(seconds)
            finished.append(name)
        except asyncio.CancelledError:
            cancelled.append(name)
            raise

    before = asyncio.all_tasks()
    tasks.spawn(work("quick", 0.01))
    tasks.spawn(work("slow", 30))
    assert len(tasks) == 2
    loop = asyncio.get_running_loop()
    began = loop.time()
    assert await tasks.drain(0.2) == 1
    assert loop.time() - began < 1.0
    assert finished == ["quick"]
    assert cancelled == ["slow"]
    assert len(tasks) == 0
    # Nothing of ours left running (tasks of earlier tests in this loop may end meanwhile).
    assert not asyncio.all_tasks() - before


async def test_a_closed_supervisor_refuses_new_work_without_leaking_the_coroutine() -> None:
    tasks = TaskSupervisor("t")
    await tasks.drain(0)
    assert tasks.closed

    async def never() -> None:  # pragma: no cover - must not run
        raise AssertionError

    coro = never()
    with pytest.raises(SupervisorClosed):
        tasks.spawn(coro)
    assert coro.cr_frame is None  # type: ignore[attr-defined]  # closed: no "never awaited"


async def test_bounded_spawns_wait_for_a_free_slot() -> None:
    tasks = TaskSupervisor("t", limit=2)
    gate = asyncio.Event()
    running = 0
    peak = 0

    async def work() -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await gate.wait()
        running -= 1

    await tasks.spawn_bounded(work())
    await tasks.spawn_bounded(work())
    third = asyncio.ensure_future(tasks.spawn_bounded(work()))
    await asyncio.sleep(0.05)
    assert not third.done()  # backpressure: the caller waits for a slot
    gate.set()
    await third
    await tasks.drain(1)
    assert peak == 2


async def test_a_failed_task_is_logged_not_lost(caplog: pytest.LogCaptureFixture) -> None:
    tasks = TaskSupervisor("t")

    async def boom() -> None:
        raise RuntimeError("kaput")

    with caplog.at_level(logging.ERROR, logger="switchyard.tasks"):
        task = tasks.spawn(boom(), name="boom")
        await asyncio.wait([task])
    assert any("boom" in r.getMessage() and r.exc_info for r in caplog.records)
    assert len(tasks) == 0


async def test_quiet_tasks_leave_their_failure_to_the_awaiter(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tasks = TaskSupervisor("t")

    async def boom() -> None:
        raise RuntimeError("kaput")

    with caplog.at_level(logging.ERROR, logger="switchyard.tasks"):
        task = tasks.spawn(boom(), quiet=True)
        with pytest.raises(RuntimeError):
            await task
    assert not caplog.records


async def test_outlast_holds_its_caller_until_a_thread_ends_whatever_cancels_come(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = threading.Event()
    order: list[str] = []

    def work() -> None:
        release.wait(5)
        order.append("thread done")
        raise ValueError("the body was not JSON")

    async def holder() -> None:
        job = asyncio.ensure_future(asyncio.to_thread(work))
        try:
            await asyncio.shield(job)
        except asyncio.CancelledError:
            await outlast(job)
            order.append("turn given up")
            raise

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        task = asyncio.ensure_future(holder())
        await asyncio.sleep(0.05)
        for _ in range(3):  # cancels while the thread runs: the holder stays
            task.cancel()
            await asyncio.sleep(0.05)
            assert not task.done()
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        gc.collect()
    assert order == ["thread done", "turn given up"]
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]
