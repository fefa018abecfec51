"""Removing moved requests from HOLD: the feeder's batched purges, and their timer.

A held request leaves HOLD only after the feeder stored it in dispatch (or its caller gave up).
Removal is batched (:mod:`switchyard.control.holdledger` decides what may go): one
``STREAM.PURGE`` per tenant subject removes everything below the oldest request of that subject
still waiting or moving, once :data:`PURGE_BATCH` of them are finished or :data:`PURGE_S` after
the first, instead of one delete request per message. A purge that fails is kept and tried
again with the next one; a leftover after a crash is moved again on restart and deduplicated by
dispatch, never run twice.

Split out of the feeder, which only says what is finished (:meth:`HoldPurger.finish`) and
hears which sequence numbers are gone (``forget``), so it can stop remembering them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import msgspec
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError

from switchyard.bus import subjects
from switchyard.control.holdledger import HoldLedger, Purge
from switchyard.runtime.tasks import TaskSupervisor

log = logging.getLogger("switchyard.control.feeder")

# Moved requests leave HOLD in one purge per tenant subject: once PURGE_BATCH of a subject are
# finished, else PURGE_S after the first. Each purge is an API round trip and a stream write, so
# a fixed fast rate (it was every 20 ms) cost more per request the slower a deployment's calls.
# Until purged they count against the tenant's HOLD limit: at most PURGE_BATCH + rate * PURGE_S.
PURGE_S = 0.5
PURGE_BATCH = 64
_JSON = msgspec.json.Encoder()


class HoldPurger:
    """Batches the removal of finished requests from HOLD (see the module docstring).

    Args:
        nc: the feeder's connection (purges are JetStream API requests).
        forget: called with a deployment and the sequence numbers a purge removed.
    """

    def __init__(self, nc: NATS, forget: Callable[[str, tuple[int, ...]], None]) -> None:
        self._nc = nc
        self._forget = forget
        self._ledger = HoldLedger(PURGE_BATCH)
        self._timer: asyncio.TimerHandle | None = None
        self._purging = False
        self._tasks = TaskSupervisor("feeder-purges")

    def read(self, subject: str, deployment: str, seq: int) -> None:
        """The feeder read ``seq`` from HOLD and queued it."""
        self._ledger.read(subject, deployment, seq)

    def finish(self, subject: str, deployment: str, seq: int) -> None:
        """``seq`` is moved (or its caller gave up): it leaves HOLD with the next purge."""
        if self._ledger.finish(subject, deployment, seq) and not self._purging:
            if self._timer is not None:
                self._timer.cancel()
            self._purge_soon()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(PURGE_S, self._purge_soon)

    def behind(self, subject: str, seq: int) -> int:
        """Finished requests of ``subject`` that ``seq``, still waiting, keeps in HOLD."""
        return self._ledger.behind(subject, seq)

    async def close(self, *, connected: bool) -> None:
        """Finish the purges under way and, while ``connected``, send what is due now (what
        was moved leaves HOLD now, not after a restart); then start afresh, ready for the
        feeder's next start."""
        await self._tasks.drain(2.0)
        if connected:  # else a restart moves the leftovers again (deduplicated)
            await self.purge()
        if self._timer is not None:
            self._timer.cancel()
        self._ledger = HoldLedger(PURGE_BATCH)
        self._timer = None
        self._purging = False
        self._tasks = TaskSupervisor("feeder-purges")

    def _purge_soon(self) -> None:
        self._timer = None
        if not self._purging and not self._tasks.closed:
            self._purging = True  # before the task runs: one purge at a time
            self._tasks.spawn(self.purge())

    async def purge(self) -> None:
        """Send the ledger's due purges (see :mod:`switchyard.control.holdledger`)."""
        self._purging = True
        try:
            for purge in self._ledger.due():
                await self._send(purge)
        finally:
            self._purging = False
        if self._timer is None and self._ledger.pending() and not self._tasks.closed:
            self._timer = asyncio.get_running_loop().call_later(PURGE_S, self._purge_soon)

    async def _send(self, purge: Purge) -> None:
        if not await self._purge_below(purge.subject, purge.below):
            self._ledger.failed(purge)  # tried again with the next one
            return
        self._forget(purge.deployment, purge.finished)

    async def _purge_below(self, subject: str, below: int) -> bool:
        api = f"$JS.API.STREAM.PURGE.{subjects.HOLD_STREAM}"
        payload = _JSON.encode({"filter": subject, "seq": below})
        for attempt in range(3):
            try:
                reply = await self._nc.request(api, payload, timeout=2)
            except (NatsError, TimeoutError):  # a leftover is moved again after a restart, deduped
                await asyncio.sleep(0.2 * (attempt + 1))
                continue
            if b'"error"' not in reply.data:
                return True
            log.warning("HOLD refused a purge of %s: %s", subject, reply.data[:200])
            break
        log.warning("could not remove moved requests from %s below %d", subject, below)
        return False  # the ledger keeps them; the next timer tries again
