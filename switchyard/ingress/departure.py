"""Noticing an HTTP client that leaves while its answer is awaited, and an edge that stops.

A client that disconnects before its answer (a timeout in its SDK, a closed tab) should stop
the work done for it: the provider call, or the request still waiting in its queue. The edge's
fast path wraps the wait for the answer in :class:`Departure`, which interrupts that wait the
moment the client leaves; closing the reply iterator then sends ``llm.v1.cancel``.

The same interruption serves an edge that stops: every :class:`Departure` is listed in the
edge's :class:`Waiting`, and when the stop's grace period ends the requests still waiting are
interrupted and answered 503 ``edge_stopping`` (their cancels go out as for a client that
left), instead of being cut by the server with a bare 500 a moment later.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from types import TracebackType
from typing import Any

from switchyard.errors import ApiError, ServiceUnavailable
from switchyard.runtime.tasks import TaskSupervisor

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]

CLIENT_CLOSED = 499  # the status nginx logs for a client that left before its answer


class ClientGone(Exception):
    """The HTTP client disconnected (before sending its whole body, or before its answer)."""


def edge_stopping() -> ServiceUnavailable:
    """The answer of a request its edge stopped waiting for: worth a retry, on another edge
    (the load balancer no longer sends there) or this one once it is back."""
    return ServiceUnavailable(
        "this Switchyard edge is shutting down; retry", code="edge_stopping", retry_after=1
    )


class Waiting:
    """The requests of an edge in progress: each one's :class:`Departure` (LLM requests
    waiting for their answers) or :class:`Stoppable` (the other routes).

    A set add and discard per request; :meth:`stop` interrupts them all at once.
    """

    __slots__ = ("_by_key", "_requests", "stopped")

    def __init__(self) -> None:
        self._requests: set[Stoppable] = set()
        self._by_key: dict[str, set[Departure]] = {}  # LLM requests by client key id
        self.stopped = False

    def __len__(self) -> int:
        return len(self._requests)

    def stop(self) -> int:
        """Interrupt every request listed (each answers 503 ``edge_stopping``, or ends its
        stream with that error), and any that starts from now on; how many were cut."""
        self.stopped = True
        cut = list(self._requests)
        for request in cut:
            request.stop()
        return len(cut)

    def refuse(self, key_id: str, error: ApiError) -> int:
        """End every LLM request of key ``key_id`` in progress with ``error`` (its key was
        revoked): a stream ends with it, a whole answer is it; how many were ended."""
        ended = list(self._by_key.get(key_id, ()))
        for request in ended:
            request.fell_behind(error)
        return len(ended)

    def add(self, request: Stoppable) -> None:
        self._requests.add(request)
        if isinstance(request, Departure) and request.key_id:
            self._by_key.setdefault(request.key_id, set()).add(request)

    def discard(self, request: Stoppable) -> None:
        self._requests.discard(request)
        if isinstance(request, Departure) and request.key_id:
            of_key = self._by_key.get(request.key_id)
            if of_key is not None:
                of_key.discard(request)
                if not of_key:
                    del self._by_key[request.key_id]


class Stoppable:
    """A request of the edge's other routes (FastAPI: models, batches, management API, admin
    pages), listed in ``waiting`` while inside ``async with``: an edge that stops interrupts
    it as it does the LLM requests, and the block raises :func:`edge_stopping`. Its cost, a
    timeout scope and a set entry, matters nowhere on these routes. :class:`Departure` builds
    on it."""

    __slots__ = ("_scope", "_waiting", "stopping")

    def __init__(self, waiting: Waiting) -> None:
        self.stopping = False
        self._waiting = waiting
        self._scope: asyncio.Timeout | None = None

    def stop(self) -> None:
        """The edge stops: end the wait now (the block raises :func:`edge_stopping`)."""
        if self.stopping:
            return
        self.stopping = True
        self._interrupt()

    def _interrupt(self) -> None:
        # Once: a client leaving and the edge stopping can both come, and an expired scope
        # refuses a new deadline (RuntimeError); the first interruption is the one that counts.
        if self._scope is not None and not self._scope.expired():
            self._scope.reschedule(asyncio.get_running_loop().time())

    def _why(self) -> Exception | None:
        """What the block raises when it was interrupted (None: it timed out otherwise)."""
        return edge_stopping() if self.stopping else None

    async def _open(self) -> None:
        self._scope = asyncio.timeout(None)
        await self._scope.__aenter__()
        self._waiting.add(self)

    async def _close(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        scope, self._scope = self._scope, None
        self._waiting.discard(self)
        try:
            assert scope is not None  # noqa: S101  (set by _open)
            await scope.__aexit__(et, ev, tb)
        except TimeoutError:
            why = self._why()
            if why is None:
                raise
            raise why from None

    async def __aenter__(self) -> Stoppable:
        if self._waiting.stopped:
            raise edge_stopping()
        await self._open()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._close(et, ev, tb)


class _Hooked(asyncio.Event):
    """An event that also calls ``then`` when set (see :class:`Departure`)."""

    def __init__(self, then: Callable[[], None]) -> None:
        super().__init__()
        self._then = then

    def set(self) -> None:
        super().set()
        self._then()


class Departure(Stoppable):
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

    Listed in ``waiting`` while inside the block: an edge that stops interrupts the wait the
    same way, and the block raises the 503 of :func:`edge_stopping` instead. So does a reply
    that outran the client (:meth:`fell_behind`, the reply iterator's ``on_overflow``): the
    wait, a write to a client that stopped reading, ends and the block raises that error.
    """

    __slots__ = ("_behind", "_cycle", "_watcher", "gone", "key_id")

    def __init__(
        self, receive: Receive, tasks: TaskSupervisor, waiting: Waiting, key_id: str = ""
    ) -> None:
        super().__init__(waiting)
        self.key_id = key_id  # the client key's: revoking it ends the request (Waiting.refuse)
        self.gone = False
        self._behind: ApiError | None = None
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
        self._interrupt()

    def fell_behind(self, error: ApiError) -> None:
        """The client read its answer too slowly (``error``: ``reader_too_slow``), or its key
        was revoked (``api_key_revoked``): stop now, ending with ``error``."""
        if self._behind is None:
            self._behind = error
            self._interrupt()

    def _why(self) -> Exception | None:
        if self.gone:
            return ClientGone()
        if self._behind is not None:
            return self._behind
        return super()._why()

    async def __aenter__(self) -> Departure:
        if self.gone or self._waiting.stopped:  # stopped: its body came after the grace ended
            if self._watcher is not None:
                self._watcher.cancel()
            raise ClientGone if self.gone else edge_stopping()
        await self._open()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
        await self._close(et, ev, tb)


async def _watch_disconnect(receive: Receive, left: Callable[[], None]) -> None:
    """Under a server other than uvicorn: wait for the client's disconnect, then ``left()``."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            left()
            return
