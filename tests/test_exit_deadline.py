"""A process asked to stop exits by its deadline even when its graceful stop hangs."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import textwrap
import time

import pytest

from switchyard.runtime.shutdown import cancel_remaining, within

# A stop that waits for a task it cancelled; with ``hang`` the task swallows its cancellation.
_HANGING_STOP = textwrap.dedent(
    """
    import asyncio, logging, sys
    from switchyard.runtime.shutdown import ExitDeadline

    logging.basicConfig(stream=sys.stderr, level=logging.INFO)

    async def stubborn() -> None:
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if sys.argv[2] == "finish":
                    raise

    async def main() -> None:
        task = asyncio.create_task(stubborn(), name="stubborn-loop")
        await asyncio.sleep(0)
        ExitDeadline(float(sys.argv[1])).arm()
        print("stopping", flush=True)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
    """
)


def _stop(deadline: str, mode: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _HANGING_STOP, deadline, mode],
        capture_output=True,
        check=False,
        text=True,
        timeout=30,
    )


def test_a_hanging_stop_exits_at_the_deadline_and_says_what_hung() -> None:
    began = time.monotonic()
    done = _stop("1.5", "hang")
    took = time.monotonic() - began
    assert done.stdout == "stopping\n"
    assert done.returncode == 1
    assert took < 15  # interpreter start plus 1.5 s; without the deadline it never ends
    # A second before the deadline: the asyncio tasks still running, with where they wait.
    assert "still stopping" in done.stderr
    assert re.search(r"stubborn-loop: \S*<string>:\d+ stubborn\b", done.stderr)
    # At the deadline: every thread's stack, from faulthandler's own thread.
    assert "Timeout (0:00:01.500000)!" in done.stderr
    assert "most recent call first" in done.stderr


def test_a_stop_that_finishes_exits_normally() -> None:
    done = _stop("5", "finish")
    assert done.returncode == 0, done.stderr
    assert "still stopping" not in done.stderr
    assert "Timeout" not in done.stderr


def test_leftover_tasks_are_cancelled_again_until_they_end() -> None:
    """asyncio.run cancels leftovers once; a task that loses that cancel must not hang exit."""
    cancels: list[int] = []

    async def loses_first_cancel() -> None:
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancels.append(1)
                if len(cancels) > 1:
                    raise

    async def scenario() -> asyncio.Task[None]:
        task = asyncio.create_task(loses_first_cancel())
        await asyncio.sleep(0)
        await cancel_remaining()  # the same task: wait_for would make it a task to cancel
        return task

    task = asyncio.run(scenario())
    assert task.cancelled()
    assert len(cancels) == 2


def test_a_stop_step_is_bounded_and_its_failure_does_not_end_the_stop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def fine() -> None:
        await asyncio.sleep(0)

    async def stuck() -> None:
        await asyncio.sleep(3600)

    async def broken() -> None:
        raise RuntimeError("flush timeout")

    async def scenario() -> tuple[bool, bool, bool, float]:
        began = time.monotonic()
        overran = await within(0.2, stuck(), "the stuck step")
        took = time.monotonic() - began
        return await within(1, fine(), "a fine step"), overran, await within(1, broken(), "x"), took

    finished, overran, failed, took = asyncio.run(scenario())
    assert (finished, overran, failed) == (True, False, False)
    assert took < 2
    assert "the stuck step did not finish within 0.2s" in caplog.text
    assert "x failed (flush timeout); stopping without it" in caplog.text
