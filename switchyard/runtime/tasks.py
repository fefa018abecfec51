"""One owner for a process's concurrent work: spawn, bound, finish or cancel, never leak.

Every place a Switchyard process runs work beside its main flow (a task per request in the head
and the model-proxy, a task per NATS micro-service request, background loops, batch flushes)
spawns it through a :class:`TaskSupervisor`. The supervisor keeps a reference to each task (so
none is garbage-collected mid-flight), logs a task that failed (so no "exception was never
retrieved"), bounds concurrency when asked (a semaphore slot per task, released when it ends),
and on shutdown :meth:`~TaskSupervisor.drain` gives what is running ``grace`` seconds to finish,
then cancels the rest and waits until they are gone.

Why not a bare :class:`asyncio.TaskGroup`: a TaskGroup cancels every sibling when one task
fails and is bound to the task that entered it. Requests are independent (one failing must not
cancel the others) and services start and stop from different tasks (a KV watch starts a
puller), so the supervisor keeps a TaskGroup's guarantees (every task owned, awaited at exit)
without those two couplings.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

log = logging.getLogger("switchyard.tasks")

T = TypeVar("T")


async def outlast(work: asyncio.Future[Any]) -> None:
    """Wait until ``work`` is done, whatever cancels the caller meanwhile, and drop its result.

    For work that cannot be stopped (a thread) and whose resources the caller must hold until
    it ends. The caller re-raises its own cancel afterwards; a failure of ``work`` is read here
    so asyncio does not log it as never retrieved."""
    while not work.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait([work])
    if not work.cancelled():
        work.exception()


class SupervisorClosed(RuntimeError):
    """Work was offered after :meth:`TaskSupervisor.drain` began."""


class TaskSupervisor:
    """Tracks the tasks of one component.

    Args:
        name: for task names and log lines.
        limit: at most this many tasks spawned with :meth:`spawn_bounded` run at once.
    """

    def __init__(self, name: str, *, limit: int | None = None) -> None:
        self.name = name
        self._tasks: set[asyncio.Task[Any]] = set()
        self._slots = asyncio.Semaphore(limit) if limit is not None else None
        self._closed = False

    def __len__(self) -> int:
        return len(self._tasks)

    @property
    def closed(self) -> bool:
        return self._closed

    def spawn(
        self, coro: Coroutine[Any, Any, T], *, name: str | None = None, quiet: bool = False
    ) -> asyncio.Task[T]:
        """Run ``coro`` as a supervised task; ``quiet`` when its failure is someone else's to
        report (a shared fetch whose awaiters see the error).

        Raises:
            SupervisorClosed: the supervisor is draining (the coroutine is closed unrun).
        """
        if self._closed:
            coro.close()
            raise SupervisorClosed(f"{self.name} is shutting down")
        task = asyncio.get_running_loop().create_task(coro, name=name or self.name)
        self._tasks.add(task)
        task.add_done_callback(self._quietly_finished if quiet else self._finished)
        return task

    async def spawn_bounded(
        self, coro: Coroutine[Any, Any, T], *, name: str | None = None
    ) -> asyncio.Task[T]:
        """Like :meth:`spawn`, after waiting for a free slot (backpressure on the caller)."""
        if self._slots is None:
            return self.spawn(coro, name=name)
        try:
            await self._slots.acquire()
        except BaseException:
            coro.close()
            raise
        try:
            task = self.spawn(coro, name=name)
        except BaseException:
            self._slots.release()
            raise
        task.add_done_callback(self._release)
        return task

    def _release(self, _task: asyncio.Task[Any]) -> None:
        assert self._slots is not None  # noqa: S101  (only bounded tasks get this callback)
        self._slots.release()

    def _quietly_finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: an awaiter reports it

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error(
                "task %s of %s failed", task.get_name(), self.name, exc_info=(type(exc), exc, None)
            )

    async def drain(self, grace: float) -> int:
        """Refuse new work, let running tasks finish for up to ``grace`` seconds, then cancel
        the rest and wait for them to end. Idempotent.

        Returns:
            How many tasks had to be cancelled.
        """
        self._closed = True
        running = set(self._tasks)
        if not running:
            return 0
        _, pending = await asyncio.wait(running, timeout=max(0.0, grace))
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
            log.info(
                "%s: cancelled %d task(s) still running after %.1fs", self.name, len(pending), grace
            )
        return len(pending)

    async def cancel_all(self) -> int:
        """Cancel everything now (background loops); same as ``drain(0)``."""
        return await self.drain(0.0)
