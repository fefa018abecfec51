"""Noticing an HTTP client that leaves while its answer is awaited.

A client that disconnects before its answer (a timeout in its SDK, a closed tab) should stop
the work done for it: the provider call, or the request still waiting in its queue. The edge's
fast path wraps the wait for the answer in :class:`Departure`, which interrupts that wait the
moment the client leaves; closing the reply iterator then sends ``llm.v1.cancel``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from types import TracebackType
from typing import Any

from switchyard.runtime.tasks import TaskSupervisor

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]


class ClientGone(Exception):
    """The HTTP client disconnected (before sending its whole body, or before its answer)."""


class _Hooked(asyncio.Event):
    """An event that also calls ``then`` when set (see :class:`Departure`)."""

    def __init__(self, then: Callable[[], None]) -> None:
        super().__init__()
        self._then = then

    def set(self) -> None:
        super().set()
        self._then()


class Departure:
    """Notices an HTTP client that leaves while its answer is awaited, and stops the wait.

    Inside ``async with``, a client that disconnects interrupts what is awaited at once: the
    reply iterator of :class:`LLMClient` closes, which sends ``llm.v1.cancel`` (the provider
    call stops, or the request is dropped from its queue unserved), and the block raises
    :class:`ClientGone`. Without this the edge noticed a client leaving only once a stream had
    started, and a non-streamed request ran (and was billed) in full for nobody.

    No task per request: uvicorn tells a request's cycle of a lost connection by setting the
    event ``receive`` waits on (``message_event``; nothing else sets it once the body is read,
    except the answer's end), so that event is swapped for one that also calls back. That
    relies on a detail of uvicorn's request cycle (as :mod:`.onewrite` does on another); under
    any other server a task waits on ``receive`` instead.
    """

    __slots__ = ("_cycle", "_scope", "_watcher", "gone")

    def __init__(self, receive: Receive, tasks: TaskSupervisor) -> None:
        self.gone = False
        self._scope: asyncio.Timeout | None = None
        self._watcher: asyncio.Task[None] | None = None
        cycle: Any = getattr(receive, "__self__", None)
        self._cycle = cycle
        if isinstance(getattr(cycle, "message_event", None), asyncio.Event) and isinstance(
            getattr(cycle, "disconnected", None), bool
        ):
            cycle.message_event = _Hooked(self._check)
            self.gone = cycle.disconnected
        else:
            self._watcher = tasks.spawn(_watch_disconnect(receive, self._left), name="departure")

    def _check(self) -> None:
        if self._cycle.disconnected:  # else the answer ended
            self._left()

    def _left(self) -> None:
        if self.gone:
            return
        self.gone = True
        if self._scope is not None:
            self._scope.reschedule(asyncio.get_running_loop().time())

    async def __aenter__(self) -> Departure:
        if self.gone:
            raise ClientGone
        self._scope = asyncio.timeout(None)
        await self._scope.__aenter__()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        scope, self._scope = self._scope, None
        if self._watcher is not None:
            self._watcher.cancel()
        try:
            assert scope is not None  # noqa: S101  (set by __aenter__)
            await scope.__aexit__(et, ev, tb)
        except TimeoutError:
            if self.gone:
                raise ClientGone from None
            raise


async def _watch_disconnect(receive: Receive, left: Callable[[], None]) -> None:
    """Under a server other than uvicorn: wait for the client's disconnect, then ``left()``."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            left()
            return
