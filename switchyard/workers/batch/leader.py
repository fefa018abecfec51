"""One batch runner at a time: it runs batches only while it holds ``runner.leader``.

Two runners working one batch send each of its lines twice (two provider calls, each billed;
one answer recorded), and one may end the batch while the other still sends. Nothing but the
deployment kept a second runner away (Kubernetes' Recreate strategy); compose recreating the
service while the old container still stops, a second ``switchyard serve batch``, or a network
partition ran two. So a runner takes the lease (:class:`~switchyard.runtime.lease.Lease`, in
``sy_batches``) before it runs anything, renews it every third of its length, and gives it up
on a clean stop once its lines on the bus are answered. A runner that loses it, or cannot
renew it while a third of it is left, sends no line more at once; its lines on the bus finish
and are recorded. A runner started beside a holder waits, ready, for the lease to be given up
or to lapse: at most ``LEASE_TTL_S`` and one renewal round after the holder stopped renewing.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError

from switchyard.bus import subjects
from switchyard.bus.envelope import new_request_id
from switchyard.runtime.lease import Lease
from switchyard.runtime.tasks import TaskSupervisor
from switchyard.schemas.batches import RUNNER_LEASE_KEY

log = logging.getLogger("switchyard.batch")

LEASE_TTL_S = 6.0


class Leadership:
    """Holds the runner lease, and says when holding it starts or stops (``on_change``)."""

    def __init__(
        self,
        nc: NATS,
        instance: str,
        on_change: Callable[[bool], None],
        *,
        ttl: float = LEASE_TTL_S,
    ) -> None:
        self._nc = nc
        self._owner = f"{instance}-{os.getpid()}-{new_request_id()}"
        self._on_change = on_change
        self._ttl = ttl
        self._lease: Lease | None = None
        self.holding = False
        self._renewing = TaskSupervisor("batch-lease")

    async def start(self) -> None:
        # A renewal ends within a third of the lease: one left waiting longer would let the
        # lease run out under a holder that still thinks it has it.
        js = self._nc.jetstream(timeout=self._ttl / 3)
        kv = await js.key_value(subjects.BATCHES_BUCKET)
        self._lease = Lease(kv, RUNNER_LEASE_KEY, self._owner, ttl=self._ttl)
        try:
            await self._round()
        except (NatsError, TimeoutError) as exc:  # (the next round tries again)
            log.warning("could not take the batch runner lease yet: %r", exc)
        self._renewing.spawn(self._renew_forever())

    def held(self) -> bool:
        """Whether a line may be sent now: the lease is held, with a margin left."""
        return self.holding and self._lease is not None and self._lease.held()

    async def stop(self) -> None:
        """Stop renewing and give the lease up (call once the lines on the bus are done)."""
        await self._renewing.cancel_all()
        if self._lease is not None and self.holding:
            self.holding = False
            await self._lease.release()

    async def _round(self) -> None:
        assert self._lease is not None  # noqa: S101  (made in start)
        holding = await self._lease.renew()
        if holding == self.holding:
            return
        self.holding = holding
        if holding:
            log.info("this runner holds the batch runner lease: it runs the batches now")
        else:
            log.warning("lost the batch runner lease: sending no line more; another runs them")
        self._on_change(holding)

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self._ttl / 3)
            try:
                await self._round()
            except (NatsError, TimeoutError) as exc:  # a failover: one line, try next round
                log.warning("batch runner lease round failed: %s", str(exc) or type(exc).__name__)
            except Exception:  # keep trying: a failed round leaves the lease to expire
                log.exception("batch runner lease round failed")
