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
import faulthandler
import io
import logging
import sys

log = logging.getLogger("switchyard.shutdown")

REPORT_TASKS = 20  # stacks logged before the deadline, at most


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
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
        stacks = io.StringIO()
        for task in tasks[:REPORT_TASKS]:
            task.print_stack(limit=4, file=stacks)
        log.error(
            "still stopping %.0fs after being asked to; exiting in 1s. %d task(s) running:\n%s",
            self.seconds - 1.0,
            len(tasks),
            stacks.getvalue().rstrip(),
        )


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
