"""Wrong admin tokens on ``/admin/v1`` in the audit log, one entry a minute per address at most.

The web app's sign-in audits its wrong tokens (:mod:`switchyard.admin.ui.signin_guard`); the
API's were only counted and logged. Each refused call (401 ``invalid_admin_token``, or 429
``too_many_failed_authentications`` once the address waits) now counts for its address (an
IPv6 client's /64, as the guard counts it): the first one gets an entry at once, and the ones
after it within :data:`INTERVAL_S` are counted, then said in one entry (how many, since when)
when the minute is over, whether or not the address sends more. All addresses together get at
most :data:`PER_HOUR` entries an hour; counts past that wait for the next hour, merged, so a
flood from many addresses cannot fill the stream, yet every refusal is counted in some entry.

An entry: actor :data:`ACTOR`, action :data:`ACTION`, via ``api``, ``ok`` false, and the
source as every entry names it (``client via proxy`` behind a trusted proxy). It never holds
any part of the presented token.

Counts not yet said when the gateway stops are said then (:meth:`RefusalAudit.stop`): they
lived in memory only, so a stop (a rollout, a restart) lost up to a minute of every address's
refusals, and an hour's worth past the allowance. At the stop, entries of their own while the
hour's allowance lasts, and the rest in one entry (source :data:`STOPPED`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from starlette.requests import Request

from switchyard.bus.audit import AuditWriter
from switchyard.runtime.client_address import TrustedProxies

log = logging.getLogger("switchyard.admin.token_audit")

INTERVAL_S = 60.0  # at most one entry per address per this many seconds
PER_HOUR = 30  # entries from every address together per hour (each saying a count)
MAX_ADDRESSES = 10_000  # addresses followed; the least recently refused are said first
ACTOR = "(wrong admin token)"
MANY = "(addresses past the 10,000 followed)"  # the source of their counts' entry
TOP = 5  # the sources forgotten into that entry with the most refusals, named in it
ACTION = "token.refused"
# The source of the one entry that says, at a stop, the counts past the hour's allowance.
STOPPED = "(addresses not said before the gateway stopped)"
STOP_WRITE_S = 5.0  # at most this long writing them at a stop (the audit stream may be away)
# The error codes of a call refused for its token (a missing token is not a guess).
REFUSED_CODES = frozenset({"invalid_admin_token", "too_many_failed_authentications"})


@dataclass
class _Address:
    source: str  # as the newest refused call's entry would name it
    written: float  # when its last entry was written (-inf: never)
    pending: int = 0  # refused since that entry
    since: float = 0.0  # the first of those


@dataclass(frozen=True)
class Refusals:
    """An entry to write: ``count`` wrong tokens from ``source`` from ``since`` on."""

    source: str
    count: int
    since: float
    top: tuple[tuple[str, int], ...] = ()  # (source, count): the most refused of :data:`MANY`


def refusal_detail(refusals: Refusals) -> str:
    """The entry's words: ``wrong admin token`` for one (as the sign-in's), else how many
    since when."""
    if refusals.count == 1:
        return "wrong admin token"
    when = datetime.fromtimestamp(refusals.since, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    words = f"{refusals.count:,} wrong admin tokens since {when} (one entry a minute per address)"
    if refusals.top:
        words += "; the most from " + ", ".join(f"{s} ({n:,})" for s, n in refusals.top)
    return words


class RefusalCounts:
    """Which refusals get an entry when; pure (times are given), so it is tested alone."""

    def __init__(
        self,
        interval_s: float = INTERVAL_S,
        per_hour: int = PER_HOUR,
        max_addresses: int = MAX_ADDRESSES,
        counted_as: Callable[[str], str] = str,
    ) -> None:
        self._counted_as = counted_as  # the address a count is kept under (the guard's)
        self._interval = interval_s
        self._per_hour = per_hour
        self._max = max_addresses
        self._addresses: OrderedDict[str, _Address] = OrderedDict()
        self._hour_start = -float("inf")
        self._written = 0
        self._many = _Address(MANY, -float("inf"))
        self._pending = 0  # addresses (and :attr:`_many`) with refusals not yet written
        self._many_top: dict[str, int] = {}  # at most TOP: the most refused of those forgotten

    def _may_write(self, now: float) -> bool:
        if now - self._hour_start >= 3600.0:
            self._hour_start, self._written = now, 0
        return self._written < self._per_hour

    def _take(self, address: _Address, now: float) -> Refusals:
        top: tuple[tuple[str, int], ...] = ()
        if address is self._many:
            top = tuple(sorted(self._many_top.items(), key=lambda item: -item[1]))
            self._many_top.clear()
        taken = Refusals(address.source, address.pending, address.since, top)
        if address.pending:
            self._pending -= 1
        address.pending, address.written = 0, now
        self._written += 1
        return taken

    def refused(self, source: str, now: float) -> Refusals | None:
        """Count a refused call from ``source`` (an entry's source); the entry to write now,
        if any (None: counted for a later one)."""
        key = self._counted_as(source.partition(" via ")[0])
        self._prune(now)
        address = self._addresses.get(key)
        if address is None:
            address = self._addresses[key] = _Address(source, -float("inf"))
            while len(self._addresses) > self._max:
                self._evict()
        self._addresses.move_to_end(key)
        address.source = source
        if not address.pending:
            address.since = now
            self._pending += 1
        address.pending += 1
        if now - address.written >= self._interval and self._may_write(now):
            return self._take(address, now)
        return None

    def _evict(self) -> None:
        """Forget the least recently refused address; what it had counted moves to
        :attr:`_many` (one entry for every address forgotten so)."""
        _, oldest = self._addresses.popitem(last=False)
        self._merge(oldest)

    def _merge(self, address: _Address) -> None:
        """Move what ``address`` counted to :attr:`_many`."""
        if address.pending:
            self._pending -= 1
            if not self._many.pending:
                self._many.since = address.since
                self._pending += 1
            else:
                self._many.since = min(self._many.since, address.since)
            self._many.pending += address.pending
            self._keep_top(address.source, address.pending)
            address.pending = 0

    def _keep_top(self, source: str, count: int) -> None:
        """Name ``source`` in :data:`MANY`'s entry if it is among the :data:`TOP` most refused
        forgotten: a guesser's counts were merged there nameless once 10,000 fresh addresses
        (an IPv6 /48 holds 65,536 /64s) pushed it out, so it could hide in the flood."""
        top = self._many_top
        if source in top or len(top) < TOP:
            top[source] = top.get(source, 0) + count
            return
        least = min(top, key=top.__getitem__)
        if count > top[least]:
            del top[least]
            top[source] = count

    def _prune(self, now: float) -> None:
        """Forget the least recently refused addresses that have nothing to say and are free
        to be written again (each is looked at once: O(1) a call, amortised). Only
        :meth:`due` forgot them, and it runs only while something waits, so a table of idle
        addresses stayed full."""
        while self._addresses:
            oldest = next(iter(self._addresses.values()))
            if oldest.pending or now - oldest.written < self._interval:
                return
            self._addresses.popitem(last=False)

    def waiting(self) -> bool:
        """Whether any refusal is counted and not yet written (O(1): no walk of the table)."""
        return self._pending > 0

    def followed(self) -> int:
        """Addresses followed now."""
        return len(self._addresses)

    def due(self, now: float) -> list[Refusals]:
        """Entries whose minute is over (as many as the hour's allowance takes)."""
        out = []
        for key, address in [("", self._many), *self._addresses.items()]:
            if not address.pending or now - address.written < self._interval:
                if key and not address.pending and now - address.written >= self._interval:
                    del self._addresses[key]  # nothing to say and free to write again
                continue
            if not self._may_write(now):
                break
            out.append(self._take(address, now))
        return out

    def flush(self, now: float) -> list[Refusals]:
        """Every count not written yet, now, minute over or not (the gateway stops: nothing
        would say them later). Entries of their own while the hour's allowance lasts; the rest
        in one entry (source :data:`STOPPED`, naming the :data:`TOP` most refused), so a stop
        writes at most one entry past the allowance."""
        out = [
            self._take(address, now)
            for address in [self._many, *self._addresses.values()]
            if address.pending and self._may_write(now)
        ]
        rest = [address for address in self._addresses.values() if address.pending]
        for address in rest:
            self._merge(address)
        if self._many.pending:
            taken = self._take(self._many, now)
            out.append(Refusals(STOPPED, taken.count, taken.since, taken.top))
        return out

    def next_due(self, now: float) -> float | None:
        """Seconds until :meth:`due` may have an entry (None: nothing counted)."""
        waits = [
            max(0.0, address.written + self._interval - now)
            for address in [self._many, *self._addresses.values()]
            if address.pending
        ]
        if not waits:
            return None
        wait = min(waits)
        if self._written >= self._per_hour:
            wait = max(wait, self._hour_start + 3600.0 - now)
        return wait


class RefusalAudit:
    """Writes the entries :class:`RefusalCounts` gives: at once, or from a task once the
    minute is over. :meth:`stop` writes what is still counted (the counts live in memory)."""

    def __init__(self, audit: AuditWriter, counts: RefusalCounts | None = None) -> None:
        self._audit = audit
        self._counts = counts or RefusalCounts()
        self._task: asyncio.Task[None] | None = None

    async def refused(self, source: str) -> None:
        """O(1) a call (amortised): it walked every followed address (up to 10,000) on each
        401/429 to learn whether the task was needed; the task, once it runs, does that once
        a minute, and a pending count says whether to start it."""
        now = time.time()
        taken = self._counts.refused(source, now)
        if taken is not None:
            await self._write(taken)
        if (self._task is None or self._task.done()) and self._counts.waiting():
            self._task = asyncio.create_task(self._later())

    async def _write(self, taken: Refusals) -> bool:
        detail = refusal_detail(taken)
        return await self._audit.record(ACTOR, ACTION, "", detail, ok=False, source=taken.source)

    async def _later(self) -> None:
        while (wait := self._counts.next_due(time.time())) is not None:
            await asyncio.sleep(wait + 0.05)
            for taken in self._counts.due(time.time()):
                await self._write(taken)

    async def stop(self, within: float = STOP_WRITE_S) -> None:
        """Writes every count not said yet (:meth:`RefusalCounts.flush`), for at most
        ``within`` seconds; what was not written is counted in one error line. Idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        entries = self._counts.flush(time.time())
        lost, tried = 0, 0
        try:
            async with asyncio.timeout(within):
                for taken in entries:
                    tried += 1
                    if not await self._write(taken):
                        lost += taken.count
        except TimeoutError:
            lost += sum(e.count for e in entries[tried - 1 if tried else 0 :])
        if lost:
            log.error("%d wrong admin tokens not written to the audit log at the stop", lost)


class _Context(Protocol):
    @property
    def refusals(self) -> RefusalAudit | None: ...
    @property
    def proxies(self) -> TrustedProxies: ...


async def audit_refused(context: _Context | None, request: Request) -> None:
    """Count a call of ``/admin/v1`` refused for its token (see the module's doc)."""
    if context is not None and context.refusals is not None:
        await context.refusals.refused(context.proxies.audit_source(request.scope))
