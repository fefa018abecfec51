"""One batch runner at a time: it runs batches only while it holds ``runner.leader``.

Two runners working one batch send each of its lines twice (two provider calls, each billed;
one answer recorded), and one may end the batch while the other still sends. Nothing but the
deployment kept a second runner away (Kubernetes' Recreate strategy); compose recreating the
service while the old container still stops, a second ``switchyard serve batch``, or a network
partition ran two. So a runner takes the lease (:class:`~switchyard.runtime.lease.Lease`, in
``sy_batches``) before it runs anything, renews it every sixth of its length (each round given
a sixth to end), and gives it up on a clean stop once its lines on the bus are answered. A
round that fails (the bucket's leader failing over) leaves the next one within the third of the
lease kept as a margin; while even that is used up the runner's jobs pause (no line goes out,
none is dropped) and go on once a renewal comes. A runner that loses the lease (a round finds
another holder, or the margin is gone) stops sending; its lines on the bus finish and are
recorded. A runner started beside a holder waits, ready, for
the lease to be given up or to lapse: at most ``LEASE_TTL_S`` and one renewal round (a sixth)
after the holder's last renewal.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from nats.js.kv import KeyValue

from switchyard.bus import subjects
from switchyard.bus.envelope import new_request_id
from switchyard.runtime.lease import Lease
from switchyard.runtime.tasks import TaskSupervisor
from switchyard.schemas.batches import RUNNER_LEASE_KEY

log = logging.getLogger("switchyard.batch")

LEASE_TTL_S = 6.0
# How often the paused jobs look whether the lease is held again.
PAUSE_POLL_S = 0.1


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
        self._paused = False  # (for the log: held, but the margin is used up)
        self._renewing = TaskSupervisor("batch-lease")

    async def start(self) -> None:
        self._lease = Lease(await self._bucket(), RUNNER_LEASE_KEY, self._owner, ttl=self._ttl)
        try:
            await self._round()
        except (NatsError, TimeoutError) as exc:  # (the next round tries again)
            log.warning("could not take the batch runner lease yet: %r", exc)
        self._renewing.spawn(self._renew_forever())

    async def _bucket(self) -> KeyValue:
        """``sy_batches`` for the lease: looked up (its stream's info) with the usual JetStream
        timeout, as one slow reply there must not fail the start; its reads and writes then
        end within a sixth of the lease, so a failed round and the next end within the third
        kept as a margin (see _round)."""
        bucket = subjects.BATCHES_BUCKET
        stream = f"KV_{bucket}"
        info = await self._nc.jetstream().stream_info(stream)
        return KeyValue(
            name=bucket,
            stream=stream,
            pre=f"$KV.{bucket}.",
            js=self._nc.jetstream(timeout=self._ttl / 6),
            direct=bool(info.config.allow_direct),
        )

    def held(self) -> bool:
        """Whether a line may be sent now: the lease is held, with a margin left."""
        return self.holding and self._lease is not None and self._lease.held()

    async def wait_held(self) -> None:
        """Return once a line may be sent (:meth:`held`), or the lease is lost (``holding``
        false: the caller then stops): a renewal late by more than the margin pauses the
        sending instead of dropping what is left of every batch."""
        if self.held() or not self.holding:
            return
        if not self._paused:
            self._paused = True
            log.warning("batch runner lease not renewed in time: sending paused")
        while self.holding and not self.held():  # noqa: ASYNC110  (held() ends by the clock)
            await asyncio.sleep(PAUSE_POLL_S)
        if self._paused:
            self._paused = False
            if self.holding:
                log.info("batch runner lease renewed again: sending goes on")

    async def stop(self) -> None:
        """Stop renewing and give the lease up (call once the lines on the bus are done)."""
        await self._renewing.cancel_all()
        if self._lease is not None and self.holding:
            self.holding = False
            await self._lease.release()

    async def _round(self) -> None:
        assert self._lease is not None  # noqa: S101  (made in start)
        try:
            async with asyncio.timeout(self._ttl / 6):
                holding = await self._lease.renew()
        except TimeoutError:  # (not renewed: what was written stands, margin left or not)
            log.warning("batch runner lease round timed out")
            holding = self._lease.held()
        except Exception:  # not foreseen: not renewed either (else `holding` stayed true
            # past the lease, and every line waited in wait_held for ever)
            log.exception("batch runner lease round failed")
            holding = self._lease.held()
        if holding == self.holding:
            return
        self.holding = holding
        if holding:
            log.info("this runner holds the batch runner lease: it runs the batches now")
        else:
            log.warning("lost the batch runner lease: sending no line more; another runs them")
        self._on_change(holding)

    async def _renew_forever(self) -> None:
        # Rounds start every sixth of the lease, however long the last one took: a round that
        # timed out does not push the next one later.
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            due = max(due + self._ttl / 6, loop.time())
            await asyncio.sleep(due - loop.time())
            try:
                await self._round()
            except (NatsError, TimeoutError) as exc:  # a failover: one line, try next round
                log.warning("batch runner lease round failed: %s", str(exc) or type(exc).__name__)
            except Exception:  # keep trying: a failed round leaves the lease to expire
                log.exception("batch runner lease round failed")
