"""One feeder at a time: a lease in ``sy_sched`` that control replicas take turns holding.

Two feeders would each count the same free slots and move twice as many requests into
dispatch. So a control replica feeds only while it holds the lease: a KV entry naming it and
an expiry, renewed every third of its length with compare-and-set. Another replica takes it
over only once it has expired (the holder stopped renewing: crashed, stopped, partitioned).

A holder that cannot reach the bucket (its NATS node or the bucket's leader is failing over)
keeps the lease it has until only a third of it is left, so one missed renewal does not stop
and restart the feeder. Expiry is judged by each replica's own clock, so the hosts' clocks must
agree within that third (2 s with the default 6 s lease).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import msgspec
from nats.errors import Error as NatsError
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from switchyard.schemas.scheduling import (
    FEEDER_LEASE_KEY,
    LEASE_DECODER,
    LEASE_ENCODER,
    FeederLease,
)

RELEASE_TIMEOUT_S = 2.0


class Lease:
    def __init__(self, kv: KeyValue, owner: str, *, ttl: float = 6.0) -> None:
        self._kv = kv
        self.owner = owner
        self.ttl = ttl
        self._until = float("-inf")  # the expiry this replica last wrote

    async def renew(self, now: float | None = None) -> bool:
        """Take or keep the lease; True while this replica holds it."""
        moment = time.time() if now is None else now
        mine = LEASE_ENCODER.encode(FeederLease(self.owner, moment + self.ttl))
        try:
            try:
                entry = await self._kv.get(FEEDER_LEASE_KEY)
            except KeyNotFoundError:
                await self._kv.create(FEEDER_LEASE_KEY, mine)
                return self._won(moment)
            holder = LEASE_DECODER.decode(entry.value) if entry.value else None
            if holder is not None and holder.owner != self.owner and holder.until > moment:
                return self._lost()
            await self._kv.update(FEEDER_LEASE_KEY, mine, last=entry.revision)
            return self._won(moment)
        except (KeyWrongLastSequenceError, msgspec.DecodeError, msgspec.ValidationError):
            return self._lost()  # another replica won this round
        except (NatsError, TimeoutError):
            # Cannot renew: what it wrote still stands, but stop while a margin is left.
            return moment < self._until - self.ttl / 3

    def _won(self, moment: float) -> bool:
        self._until = moment + self.ttl
        return True

    def _lost(self) -> bool:
        self._until = float("-inf")
        return False

    async def release(self) -> None:
        """Give the lease up at once (a clean stop), if this replica holds it."""
        # Failing here is harmless: the lease expires by itself. So it is tried briefly: with
        # the server gone (every process stopping at once) two reads would wait 10 s each.
        with contextlib.suppress(
            NatsError, TimeoutError, msgspec.DecodeError, msgspec.ValidationError
        ):
            self._until = float("-inf")
            async with asyncio.timeout(RELEASE_TIMEOUT_S):
                entry = await self._kv.get(FEEDER_LEASE_KEY)
                if entry.value and LEASE_DECODER.decode(entry.value).owner == self.owner:
                    await self._kv.delete(FEEDER_LEASE_KEY, last=entry.revision)
