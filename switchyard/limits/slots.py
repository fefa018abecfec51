"""The concurrency slots one edge holds, and their renewal.

A slot is a member of the key's in-flight set (``sy:rl:<key>:par``), scored with the last time
its edge vouched for it: the admission, then each renewal. A key with ``max_parallel`` counts
them; a key with a budget keeps one per request too, for the hold each takes on the budget
(``sy:rl:<key>:hold``, which lives as long as the set). Every edge renews all the slots it
holds in one script call every ``LEASE_S / 3`` (pipelined calls of at most ``BATCH`` members
when it holds more), never per request. An edge that dies without settling (``kill -9``, OOM,
node loss) stops renewing: its slots are older than ``LEASE_S`` within a minute, and the next
admission that finds the key full (or its budget held) sweeps them and frees their holds.
Knowing which edges are alive would need a registry of edges; the renewal needs nothing but
the set itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator

from switchyard.limits import keys as rk
from switchyard.limits.resp import Script
from switchyard.runtime.tasks import TaskSupervisor
from switchyard.runtime.throttle import Throttle

log = logging.getLogger("switchyard.limits")

# How long a slot lives without renewal: what a dead edge's slots hold a key for, at most.
LEASE_S = 60.0
# A live edge renews three times per lease: two renewals in a row may fail (a Redis blip, a
# busy loop) before a live request loses its slot.
RENEWALS_PER_LEASE = 3
# Members per renewal call: far below Lua's unpack limit (~8000 values), one short script run.
BATCH = 500


class HeldSlots:
    """Slots this process holds, by key id, with when each was taken.

    Args:
        cap_s: a slot held longer than this is no longer renewed. No request outlives its
            deadline (``ingress.max_deadline_s``), so such a slot was never settled (a bug);
            it then runs out like a dead edge's instead of holding the key forever.
    """

    def __init__(self, cap_s: float) -> None:
        self._cap_s = cap_s
        self._held: dict[str, dict[str, float]] = {}

    def __bool__(self) -> bool:
        return bool(self._held)

    def __len__(self) -> int:
        return sum(len(members) for members in self._held.values())

    def take(self, key_id: str, member: str, now: float) -> None:
        self._held.setdefault(key_id, {})[member] = now

    def release(self, key_id: str, member: str) -> None:
        members = self._held.get(key_id)
        if members is not None:
            members.pop(member, None)
            if not members:
                del self._held[key_id]

    def drain(self) -> dict[str, list[str]]:
        """Every slot still held, by key id, forgotten here (the edge is shutting down)."""
        held, self._held = self._held, {}
        return {key_id: list(members) for key_id, members in held.items()}

    def due(self, now: float) -> Iterator[list[tuple[str, list[str]]]]:
        """The slots to renew, in batches of at most ``BATCH`` members: each batch is a list
        of (key id, members). Slots older than the cap are dropped instead."""
        batch: list[tuple[str, list[str]]] = []
        size = 0
        for key_id in list(self._held):
            members = self._held[key_id]
            for member in [m for m, taken in members.items() if now - taken > self._cap_s]:
                del members[member]
            if not members:
                del self._held[key_id]
                continue
            names = list(members)
            while names:
                part, names = names[: BATCH - size], names[BATCH - size :]
                batch.append((key_id, part))
                size += len(part)
                if size >= BATCH:
                    yield batch
                    batch, size = [], 0
        if batch:
            yield batch


class SlotLeases:
    """Renews the slots this edge holds while it holds any (an idle edge sets no timer).

    Args:
        renew: the ``RENEW`` script on the edge's Redis connection.
        tasks: where renewal calls run (the limiter's, drained at its close).
        lease_s: how long a slot lives unrenewed; renewed ``RENEWALS_PER_LEASE`` times per lease.
        cap_s: see :class:`HeldSlots`.
    """

    def __init__(self, renew: Script, tasks: TaskSupervisor, lease_s: float, cap_s: float) -> None:
        self._renew = renew
        self._tasks = tasks
        self.lease_ms = int(lease_s * 1000)
        self._every_s = lease_s / RENEWALS_PER_LEASE
        # A slot renewed within this is a live edge's: half an interval of lag is allowed
        # (a busy event loop, a slow call) before the admit script calls it abandoned.
        self.fresh_ms = int(self._every_s * 1500)
        self._held = HeldSlots(cap_s)
        self._timer: asyncio.TimerHandle | None = None
        self._warn = Throttle(10.0)

    def take(self, key_id: str, member: str, now: float) -> None:
        self._held.take(key_id, member, now)
        if self._timer is None and not self._tasks.closed:
            self._timer = asyncio.get_running_loop().call_later(self._every_s, self._due)

    def release(self, key_id: str, member: str) -> None:
        self._held.release(key_id, member)

    def stop(self) -> dict[str, list[str]]:
        """Stop renewing; return the slots still held, by key id (to free them)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        return self._held.drain()

    def _due(self) -> None:
        self._timer = None
        batches = list(self._held.due(time.time()))
        if batches and not self._tasks.closed:
            self._tasks.spawn(self._send(batches), name="limits-renew")
        if self._held and not self._tasks.closed:
            self._timer = asyncio.get_running_loop().call_later(self._every_s, self._due)

    async def _send(self, batches: list[list[tuple[str, list[str]]]]) -> None:
        now_ms = int(time.time() * 1000)
        calls = []
        for batch in batches:
            args: list[bytes | str | int] = [now_ms, self.lease_ms]
            for _, members in batch:
                args += [len(members), *members]
            keys = [k for key_id, _ in batch for k in (rk.parallel(key_id), rk.holds(key_id))]
            calls.append(self._renew(keys=keys, args=args))
        results = await asyncio.gather(*calls, return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed and self._warn.ready():
            # One failure is harmless (three renewals per lease); if they go on, this edge's
            # requests lose their slots and their keys admit more than they allow meanwhile.
            log.warning(
                "could not renew concurrency slots in Redis (%s); they run out %.0fs after "
                "their last renewal",
                type(failed[0]).__name__,
                self.lease_ms / 1000,
            )
