"""One feeder at a time: a lease in ``sy_sched`` that control replicas take turns holding.

Two feeders would each count the same free slots and move twice as many requests into
dispatch. So a control replica feeds only while it holds the lease: a KV entry naming it and
an expiry, renewed every third of its length with compare-and-set. Another replica takes it
over only once it has expired (the holder stopped renewing: crashed, stopped, partitioned).
Expiry is judged by each replica's own clock; keep the hosts' clocks within a few seconds.
"""

from __future__ import annotations

import contextlib
import time

import msgspec
from nats.errors import Error as NatsError
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

KEY = "feeder.leader"


class _Holder(msgspec.Struct, frozen=True):
    owner: str
    until: float


_ENCODE = msgspec.json.Encoder()
_DECODE = msgspec.json.Decoder(_Holder)


class Lease:
    def __init__(self, kv: KeyValue, owner: str, *, ttl: float = 6.0) -> None:
        self._kv = kv
        self.owner = owner
        self.ttl = ttl

    async def renew(self, now: float | None = None) -> bool:
        """Take or keep the lease; True while this replica holds it."""
        moment = time.time() if now is None else now
        mine = _ENCODE.encode(_Holder(self.owner, moment + self.ttl))
        try:
            try:
                entry = await self._kv.get(KEY)
            except KeyNotFoundError:
                await self._kv.create(KEY, mine)
                return True
            holder = _DECODE.decode(entry.value) if entry.value else None
            if holder is not None and holder.owner != self.owner and holder.until > moment:
                return False
            await self._kv.update(KEY, mine, last=entry.revision)
            return True
        except (KeyWrongLastSequenceError, msgspec.DecodeError, msgspec.ValidationError):
            return False  # another replica won this round
        except (NatsError, TimeoutError):
            return False  # cannot prove it holds the lease: it must not feed

    async def release(self) -> None:
        """Give the lease up at once (a clean stop), if this replica holds it."""
        # Failing here is harmless: the lease expires by itself.
        with contextlib.suppress(
            NatsError, TimeoutError, msgspec.DecodeError, msgspec.ValidationError
        ):
            entry = await self._kv.get(KEY)
            if entry.value and _DECODE.decode(entry.value).owner == self.owner:
                await self._kv.delete(KEY, last=entry.revision)
