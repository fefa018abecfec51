"""Usage events leave the model-proxy in batches: one stored message per ~20 ms, not per request.

Each batch is one JetStream publish, confirmed in the background and re-published until stored
(deduplicated by its ``Nats-Msg-Id``), so a request pays a list append instead of a publish and
an acknowledgement. Accounting applies each batch once, and each event once by its own id (one
per request and deployment hop), so a request executed twice in a failover is billed once.
:meth:`UsageBatcher.add` returns a future that resolves when the event's batch is stored: the
model-proxy acknowledges the request only then, so a worker killed before its batch was stored
leaves the request to be redelivered (and billed) instead of answered and unbilled.

The first event after a quiet ``interval`` goes out at once (in the wake-up that answered the
request), later ones wait for the next batch: under load nothing changes (one batch per
``interval``), and a lone request no longer wakes this process, nats-server, the stream and
accounting a second time 20 ms after its answer (measured: 8-15% of its CPU across the stack).
"""

from __future__ import annotations

import asyncio
import logging

from nats.nuid import NUID

from switchyard.bus import headers as h
from switchyard.bus import subjects
from switchyard.runtime.jetstream import AckPublisher
from switchyard.runtime.tasks import TaskSupervisor
from switchyard.schemas.events import USAGE_BATCH_ENCODER, UsageBatch, UsageEvent

log = logging.getLogger("switchyard.modelproxy")


class UsageBatcher:
    def __init__(
        self, publisher: AckPublisher, *, interval: float = 0.02, max_events: int = 256
    ) -> None:
        self._publisher = publisher
        self._interval = interval
        self._max = max_events
        self._events: list[UsageEvent] = []
        self._stored: asyncio.Future[bool] | None = None  # the current batch's
        self._nuid = NUID()
        self._timer: asyncio.TimerHandle | None = None
        self._flushes = TaskSupervisor("usage-flush")
        self.published = 0  # events handed to the stream (then confirmed or given up)
        self._last_flush = float("-inf")

    def add(self, event: UsageEvent) -> asyncio.Future[bool]:
        """Queue ``event`` for the next batch.

        Returns:
            a future: True once the batch is stored, False if it was given up.
        """
        loop = asyncio.get_running_loop()
        if self._stored is None:
            self._stored = loop.create_future()
        stored = self._stored
        self._events.append(event)
        if len(self._events) >= self._max:
            self._flush_soon()
        elif self._timer is None:
            due = self._last_flush + self._interval
            if loop.time() >= due:  # quiet for a whole interval: no batch to wait for
                self._flush_soon()
            else:
                self._timer = loop.call_at(due, self._flush_soon)
        return stored

    def _flush_soon(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._events or self._stored is None:
            return
        self._last_flush = asyncio.get_running_loop().time()
        events, self._events = self._events, []
        stored, self._stored = self._stored, None
        self._flushes.spawn(self._send(events, stored))

    @property
    def dropped(self) -> int:
        """Events the stream never confirmed, after every retry (lost to billing)."""
        return self._publisher.given_up_weight

    async def _send(self, events: list[UsageEvent], stored: asyncio.Future[bool]) -> None:
        batch_id = self._nuid.next().decode()
        self.published += len(events)
        # Never raises: the publisher retries this batch under its id until stored, and
        # accounting deduplicates by that id. Re-queueing the events here would bill twice.
        try:
            confirmed = await self._publisher.publish_confirmed(
                subjects.USAGE,
                USAGE_BATCH_ENCODER.encode(UsageBatch(id=batch_id, events=events)),
                {h.NATS_MSG_ID: batch_id},
                weight=len(events),
            )
            stored.set_result(await confirmed)
        finally:
            if not stored.done():  # cancelled at stop: the publisher gives the batch up
                stored.set_result(False)

    async def stop(self, grace: float = 5.0) -> None:
        """Send what is buffered and wait for the sends. Idempotent."""
        self._flush_soon()
        await self._flushes.drain(grace)
