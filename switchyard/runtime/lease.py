"""One holder at a time: a lease in a KV bucket that the replicas of a process take turns holding.

Control's feeder (``sy_sched`` / ``feeder.leader``: two feeders would each count the same free
slots and move twice as many requests into dispatch) and the batch runner (``sy_batches`` /
``runner.leader``: two runners would send each line twice) work only while they hold it: a KV
entry naming the holder and an expiry, renewed with compare-and-set well within its length (the
feeder every third of it, the batch runner every sixth).
Another replica takes it over only once it has expired (the holder stopped renewing: crashed,
partitioned) or was given up (:meth:`Lease.release`, a clean stop).

A holder that cannot reach the bucket (its NATS node or the bucket's leader is failing over)
keeps the lease it has until only a third of it is left, so one missed renewal does not stop
and restart its work. Expiry is judged by each replica's own clock, so the hosts' clocks must
agree within that third (2 s with the default 6 s lease).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import msgspec
from nats.errors import Error as NatsError
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from switchyard.schemas.scheduling import LEASE_DECODER, LEASE_ENCODER, FeederLease

log = logging.getLogger("switchyard.lease")

RELEASE_TIMEOUT_S = 2.0
# A stored expiry later than one written now by more than this (or a third of the lease, if
# more) is told as a clock ahead; less is the ordinary difference between hosts' clocks.
SKEW_TOLERANCE_MIN_S = 0.5


class Lease:
    def __init__(self, kv: KeyValue, key: str, owner: str, *, ttl: float = 6.0) -> None:
        self._kv = kv
        self.key = key
        self.owner = owner
        self.ttl = ttl
        self._until = float("-inf")  # the expiry this replica last wrote
        self._skew_told = False  # (a clock ahead is logged once)

    async def renew(self, now: float | None = None) -> bool:
        """Take or keep the lease; True while this replica holds it."""
        moment = time.time() if now is None else now
        mine = LEASE_ENCODER.encode(FeederLease(self.owner, moment + self.ttl))
        try:
            try:
                entry = await self._kv.get(self.key)
            except KeyNotFoundError:
                await self._kv.create(self.key, mine)
                return self._won(moment)
            holder = LEASE_DECODER.decode(entry.value) if entry.value else None
            if holder is not None:
                self._check_clock(holder, moment)
            if holder is not None and holder.owner != self.owner and holder.until > moment:
                return self._lost()
            await self._kv.update(self.key, mine, last=entry.revision)
            return self._won(moment)
        except (KeyWrongLastSequenceError, msgspec.DecodeError, msgspec.ValidationError):
            return self._lost()  # another replica won this round
        except (NatsError, TimeoutError):
            # Cannot renew: what it wrote still stands, but stop while a margin is left.
            return moment < self._until - self.ttl / 3

    def _check_clock(self, holder: FeederLease, moment: float) -> None:
        """Warn (once) when the stored expiry lies beyond a lease written now by more than the
        clocks may differ (a third of the lease, at least 0.5 s): whoever wrote it has a clock
        ahead of this one (or a longer lease), so this replica waits that much longer to take
        it over. Hosts a few milliseconds apart, as any two are, are not told."""
        ahead = holder.until - moment - self.ttl
        if ahead > max(self.ttl / 3, SKEW_TOLERANCE_MIN_S) and not self._skew_told:
            self._skew_told = True
            log.warning(
                "the lease %s of %s expires %.1f s later than a lease written now would: "
                "check that the hosts' clocks agree (NTP)",
                self.key,
                holder.owner,
                ahead,
            )

    def held(self, now: float | None = None) -> bool:
        """Whether the last renewal still covers ``now`` with a third of the lease to spare:
        what a holder checks before each piece of work, between renewals (one that failed
        leaves it True only while that margin is left, as :meth:`renew` does)."""
        return (time.time() if now is None else now) < self._until - self.ttl / 3

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
                entry = await self._kv.get(self.key)
                if entry.value and LEASE_DECODER.decode(entry.value).owner == self.owner:
                    await self._kv.delete(self.key, last=entry.revision)
