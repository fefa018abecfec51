"""A stop that cannot hang: once asked to stop, a process has a fixed time, then it exits.

The supervisor SIGKILLs a child that outlives its grace period, and so do Podman and
Kubernetes. A child whose supervisor died (SIGKILLed, or killed by the OOM killer) gets only the
kernel's SIGTERM (``PR_SET_PDEATHSIG``) and nobody escalates: if its graceful stop waited on
something that never came (a task that swallowed its cancellation, a thread blocked on a dead
socket), it would live on, an orphan holding its ports.

:class:`ExitDeadline` closes that gap from inside. Armed when the stop begins, it logs the
asyncio tasks still running a second before the deadline (what a hang is waiting on), and at
the deadline dumps every thread's stack and exits with status 1. The dump and exit come from
:mod:`faulthandler`'s own thread, so they happen even if the event loop itself is stuck.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import logging
import sys
from collections.abc import Awaitable, Coroutine
from pathlib import Path
from typing import Any

from nats.aio.client import Client as NATS

from switchyard.bus import pings

log = logging.getLogger("switchyard.shutdown")

REPORT_TASKS = 30  # tasks logged before the deadline, at most
CANCEL_ROUND_S = 0.1
# One network step of a stop (an unsubscribe, a flush): milliseconds when the server answers.
STOP_STEP_S = 2.0


class ExitDeadline:
    """Exit after ``seconds`` from :meth:`arm`, whatever the graceful stop is doing."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.armed = False

    def arm(self) -> None:
        """Start the countdown (call from the event loop's thread; later calls do nothing)."""
        if self.armed:
            return
        self.armed = True
        faulthandler.dump_traceback_later(self.seconds, exit=True, file=sys.stderr)
        with_loop = _running_loop()
        if with_loop is not None:
            with_loop.call_later(max(0.0, self.seconds - 1.0), self._report)

    def _report(self) -> None:
        tasks = [t for t in asyncio.all_tasks() if not t.done()]
        lines = [f"  {t.get_name()}: {awaiting(t.get_coro())}" for t in tasks[:REPORT_TASKS]]
        log.error(
            "still stopping %.0fs after being asked to; exiting in 1s. %d task(s) running:\n%s",
            self.seconds - 1.0,
            len(tasks),
            "\n".join(lines),
        )


async def within(seconds: float, step: Awaitable[Any], what: str) -> bool:
    """Run one step of a stop for at most ``seconds``; True if it finished without error.

    A step that overruns is cancelled and not waited for (nats-py can swallow a cancel, so
    ``wait_for`` could wait for ever); one that fails is logged. Either way the stop goes on:
    the steps after it (finishing work in hand, flushing usage) matter more.
    """
    task = asyncio.ensure_future(step)
    await asyncio.wait({task}, timeout=seconds)
    if not task.done():
        task.cancel()
        log.warning("%s did not finish within %gs; stopping without it", what, seconds)
        return False
    if task.cancelled():
        return False
    failed = task.exception()
    if failed is not None:
        why = str(failed) or type(failed).__name__
        log.warning("%s failed (%s); stopping without it", what, why)
        return False
    return True


async def disconnect(nc: NATS, timeout: float = STOP_STEP_S) -> None:
    """End a service's connection: drained (subscriptions finish what they hold, publications
    are flushed) if the server answers, then closed; each step :func:`within` ``timeout``.

    Bounded because a stop must not hang on its server: nats-py refuses to drain a connection
    that is reconnecting (which left its reconnect loop running for as long as the process
    lived), and a drain whose server has gone waits 10 s for each flush. A round trip first
    tells whether the server is there; the drain is skipped if not.
    """

    async def drain() -> None:
        # A round trip first (never cut short: bus/pings.py); no answer, the server went.
        if await pings.answered(nc, 1):
            with contextlib.suppress(Exception):  # the server went meanwhile: closed below
                await nc.drain()

    if nc.is_connected:
        await within(timeout, drain(), "draining the NATS connection")
    if not nc.is_closed:
        await within(timeout, nc.close(), "closing the NATS connection")
    # close() cancels nats-py's reconnect loop once; under Python 3.11 that cancel is lost if an
    # attempt failed in the same loop turn, and the loop retries for ever. Once more makes that
    # unlikely squared (switchyard serve's exit cancels leftovers until they end).
    retrying = getattr(nc, "_reconnection_task", None)
    if isinstance(retrying, asyncio.Task) and not retrying.done():
        retrying.cancel()


async def cancel_remaining() -> None:
    """Cancel every other task and wait for them, cancelling again until all have ended.

    ``asyncio.run`` cancels leftover tasks once and waits for ever. Under Python 3.11 a cancel
    can be lost: ``wait_for`` returns the awaited result if it completed in the same loop turn,
    and nats-py's reconnect loop, whose attempts to a stopped server fail at once, then simply
    tries again. A process whose NATS server had gone could retry for ever instead of exiting.
    """
    current = asyncio.current_task()
    while True:
        others = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
        if not others:
            return
        for task in others:
            task.cancel()
        await asyncio.wait(others, timeout=CANCEL_ROUND_S)


def awaiting(coro: Coroutine[Any, Any, Any] | Any) -> str:
    """Where a suspended coroutine waits: its chain of awaits, outermost first."""
    steps = []
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            break
        where = Path(frame.f_code.co_filename)
        steps.append(f"{where.parent.name}/{where.name}:{frame.f_lineno} {frame.f_code.co_name}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return " > ".join(steps) or repr(coro)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
