"""The runner's sending slots, shared fairly between the batches that run.

A slot is held only while a line is on the bus (sent and not yet answered), never while a
line waits to be sent again: a batch whose lines keep failing (a provider key not stored,
429s) must not keep every other tenant's batch from running. When a slot frees and several
batches wait for one, they take turns (round robin by batch), so a batch with 50,000 lines
queued and a batch with one line each get every other slot, whatever order they asked in.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict, deque
from collections.abc import AsyncIterator


class FairSlots:
    """``size`` slots handed out round robin between the batches waiting for one."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._free = size
        # batch id -> its lines waiting for a slot, oldest first; the first batch is next.
        self._waiting: OrderedDict[str, deque[asyncio.Future[None]]] = OrderedDict()

    @property
    def free(self) -> int:
        return self._free

    @contextlib.asynccontextmanager
    async def turn(self, batch_id: str) -> AsyncIterator[None]:
        """Hold one slot for a line of ``batch_id`` while the block runs."""
        await self._acquire(batch_id)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, batch_id: str) -> None:
        if self._free > 0 and not self._waiting:
            self._free -= 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(batch_id, deque()).append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release()  # handed a slot just as it was cancelled: pass it on
            else:
                self._forget(batch_id, waiter)
            raise

    def _forget(self, batch_id: str, waiter: asyncio.Future[None]) -> None:
        queue = self._waiting.get(batch_id)
        if queue is None:
            return
        with contextlib.suppress(ValueError):
            queue.remove(waiter)
        if not queue:
            del self._waiting[batch_id]

    def _release(self) -> None:
        """A slot came free: to the first line of the next batch in turn, else back."""
        while self._waiting:
            batch_id, queue = next(iter(self._waiting.items()))
            waiter = queue.popleft()
            if queue:
                self._waiting.move_to_end(batch_id)  # its next line waits for its next turn
            else:
                del self._waiting[batch_id]
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1
