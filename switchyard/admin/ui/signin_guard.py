"""Wrong admin tokens at sign-in, counted per address: past a few, the address waits.

Guessing the token is hopeless (256 bits from ``switchyard up``; 16 characters at least from
anywhere, 32 advised: :mod:`switchyard.admin.token`; compared in constant time), but every
wrong one is an audit entry, and the audit log keeps a bounded number of them: a client sending
wrong tokens as fast as it can would push real entries out of the admin views and the stream. So an
address gets :data:`LIMIT` wrong tokens per :data:`WINDOW_S`; past that a wrong one is refused
(429) without an entry, and one entry says the address was blocked. An IPv6 client is counted
by its /64 (one host holds all of it); an IPv4 client reached over a dual-stack socket
(``::ffff:a.b.c.d``) by its IPv4 address, not the /64 that every such client shares.
Address blocks are counted too: an IPv6 /48 and an IPv4 /24 get :data:`AREA_FACTOR` times
the limit all together (a /48 holds 65,536 /64s: LIMIT each was no bound). No count is
forgotten before its window ends (:mod:`switchyard.admin.ui.failure_counts`): the tables
dropped the least recently failing address past :data:`MAX_ADDRESSES`, so wrong tokens from
enough other addresses wiped an attacker's own count. A table full of live counts takes no
new address until one ages out; a wrong token it cannot count is refused (429) as if its
address were blocked (the right token still signs in): memory stays bounded and the limits
stay hard. Filling the table takes wrong tokens from MAX_ADDRESSES addresses within a window,
from at least MAX_ADDRESSES / (AREA_FACTOR x LIMIT) blocks.

Clients with many addresses are bounded all together: at most :data:`RECORDED` wrong tokens
get an entry of their own per :data:`RECORD_WINDOW_S`, from every address together. Every
wrong token past that (and every one refused with 429) is counted instead, and once the
window is over ONE entry says how many went unrecorded and from how many addresses, so a
real intruder hidden in a flood is still seen. At most ``RECORDED + 1`` entries an hour come
from wrong tokens, whatever is sent (docs/admin-ui.md has the arithmetic). The right token
still signs in (an address may be a shared NAT). Wrong tokens on ``/admin/v1`` count with the
sign-in's (one guard, given to :class:`~switchyard.admin.token.AdminAuth`): past the limit they
are 429 there too.

The per-address counts are shared by every gateway replica, through a bucket of their own
(:mod:`switchyard.admin.ui.failure_share`: entries kept for the window only, the bucket
capped, writes limited per second): each wrong token's time is written there under its
address (:attr:`SigninGuard.shared`, in the background: the answer does not wait),
and the times other replicas write are merged here (:meth:`SigninGuard.merge`), so a guesser
spread over the replicas is stopped after :data:`LIMIT` wrong tokens in all, not LIMIT on
each (two replicas counting the same address within milliseconds may each miss the other's
latest one). The recording caps (which wrong tokens get an audit entry) stay each replica's.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum

from switchyard.admin.ui.failure_counts import FailureCounts
from switchyard.runtime.definitions import ADMIN_SIGNIN_WINDOW_S

log = logging.getLogger("switchyard.admin")

LIMIT = 10
WINDOW_S = ADMIN_SIGNIN_WINDOW_S  # 300 s: also the shared counts' TTL in their bucket
RECORDED = 20  # wrong tokens with an entry of their own per RECORD_WINDOW_S, all addresses
RECORD_WINDOW_S = 3600.0
AREA_FACTOR = 3  # an address block (IPv6 /48, IPv4 /24) gets this many times LIMIT a window
MAX_ADDRESSES = 10_000  # addresses (and blocks) counted at once; none forgotten early
UNRECORDED_ACTOR = "(unrecorded sign-ins)"  # the summary entry's actor


class Record(Enum):
    YES = "yes"
    LAST = "last"  # record it, and say that more go unrecorded for a while
    NO = "no"  # counted for the window's summary instead


@dataclass(frozen=True)
class Unrecorded:
    """The wrong tokens of one recording window that got no entry of their own."""

    count: int
    addresses: int  # distinct addresses (IPv6: /64s) they came from
    more_addresses: bool  # past MAX_ADDRESSES: ``addresses`` is a lower bound
    start: float
    end: float


def unrecorded_detail(summary: Unrecorded) -> str:
    """The summary entry's text: how many, from how many addresses, when."""

    def hhmm(t: float) -> str:
        return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")

    addresses = f"{summary.addresses:,}{' or more' if summary.more_addresses else ''}"
    plural = "address" if summary.addresses == 1 and not summary.more_addresses else "addresses"
    return (
        f"{summary.count:,} more wrong admin tokens, not recorded one by one, "
        f"from {addresses} {plural}, between {hhmm(summary.start)} and {hhmm(summary.end)}"
    )


def counted_as(source: str) -> str:
    """The address a count is kept under: an IPv6 address's /64, else the address."""
    try:
        address = ipaddress.ip_address(source)
    except ValueError:
        return source
    if address.version == 6:
        if address.ipv4_mapped is not None:  # an IPv4 client on a dual-stack socket
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{source}/64", strict=False))
    return source


def area_of(key: str) -> str | None:
    """The address block a counted address (:func:`counted_as`) is in: an IPv6 /64's /48,
    an IPv4 address's /24 (None: not an address)."""
    try:
        network = ipaddress.ip_network(key, strict=False)
    except ValueError:
        return None
    return str(network.supernet(new_prefix=48 if network.version == 6 else 24))


class SigninGuard:
    def __init__(
        self,
        limit: int = LIMIT,
        window_s: float = WINDOW_S,
        recorded: int = RECORDED,
        record_window_s: float = RECORD_WINDOW_S,
        area_limit: int | None = None,
    ) -> None:
        self._limit = limit
        self._area_limit = AREA_FACTOR * limit if area_limit is None else area_limit
        self._window = window_s
        # +1: a count past its limit is seen as such (the one that blocks is told once)
        self._failures = FailureCounts(window_s, limit + 1, MAX_ADDRESSES)
        self._areas = FailureCounts(window_s, self._area_limit + 1, MAX_ADDRESSES)
        self._recorded_cap = recorded
        self._record_window = record_window_s
        self._start: float | None = None  # the recording window's start (None: no window)
        self._recorded = 0
        self._unrecorded = 0
        self._from: set[str] = set()
        self._more_addresses = False
        self._full_warned = -float("inf")  # when a full table was last logged
        # Given an address's recent wrong-token times after each one counted here: writes them
        # where the other replicas read them (None: this replica's only).
        self.shared: Callable[[str, list[float]], None] | None = None

    def merge(self, source: str, times: list[float], now: float | None = None) -> None:
        """Wrong-token times of ``source`` (a counted address) that another replica wrote."""
        moment = time.time() if now is None else now
        key = counted_as(source)
        self._failures.merge(key, times, moment)
        area = area_of(key)
        if area is not None:  # the times it knows already are not counted twice
            self._areas.merge(area, times, moment)

    def _recent(self, source: str, now: float) -> list[float]:
        return self._failures.recent(source, now)

    def _wait(self, table: FailureCounts, key: str, limit: int, now: float) -> float:
        times = table.recent(key, now)
        if len(times) >= limit:
            return max(1.0, self._window - (now - times[-limit]))
        room = table.room_in(key, now)  # a full table: not counted, so refused meanwhile
        if room <= 0:
            return 0.0
        if now - self._full_warned >= self._window:  # one line per window, however many
            self._full_warned = now
            log.warning(
                "the sign-in guard counts wrong admin tokens for %d addresses or blocks, its "
                "most: wrong tokens from any other get 429 for up to %.0f s (until a count "
                "ages out); a flood from many addresses?",
                len(table),
                room,
            )
        return max(1.0, room)

    def wait_s(self, source: str, now: float | None = None) -> float:
        """Seconds ``source`` must wait before it may try a token again (0: it may now):
        past its address's limit or its block's, or while neither can be counted."""
        moment = time.time() if now is None else now
        key = counted_as(source)
        wait = self._wait(self._failures, key, self._limit, moment)
        area = area_of(key)
        if area is not None:
            wait = max(wait, self._wait(self._areas, area, self._area_limit, moment))
        return wait

    def failed(self, source: str, now: float | None = None) -> bool:
        """Count a wrong token; True when it is the one that blocks the address (or its
        block), which logs one warning (never the token): one line per address per window."""
        moment = time.time() if now is None else now
        key = counted_as(source)
        times = self._failures.failed(key, moment)
        if times and self.shared is not None:
            self.shared(key, list(times))
        blocked = times is not None and len(times) == self._limit
        if blocked:
            self._warn(self._limit, key)
        area = area_of(key)
        area_times = None if area is None else self._areas.failed(area, moment)
        if area is not None and area_times is not None and len(area_times) == self._area_limit:
            self._warn(self._area_limit, area)
            blocked = True
        return blocked

    def _warn(self, limit: int, key: str) -> None:
        log.warning(
            "%d wrong admin tokens from %s within %.0f s (sign-in and /admin/v1): its wrong "
            "tokens get 429 for a while",
            limit,
            key,
            self._window,
        )

    def _open(self, moment: float) -> None:
        if self._start is None or moment - self._start >= self._record_window:
            if self._start is not None and self._unrecorded:
                return  # its summary is not taken yet: count on (the caller takes it first)
            self._start, self._recorded, self._unrecorded = moment, 0, 0
            self._from.clear()
            self._more_addresses = False

    def record(self, source: str, now: float | None = None) -> Record:
        """Whether a wrong token (not refused by :meth:`wait_s`) gets an entry of its own;
        one that does not (:attr:`Record.NO`) is counted for the window's summary."""
        moment = time.time() if now is None else now
        self._open(moment)
        if self._recorded >= self._recorded_cap:
            self.skip(source, moment)
            return Record.NO
        self._recorded += 1
        return Record.LAST if self._recorded == self._recorded_cap else Record.YES

    def skip(self, source: str, now: float | None = None) -> None:
        """Count a wrong token that gets no entry of its own (its address is waiting)."""
        moment = time.time() if now is None else now
        self._open(moment)
        self._unrecorded += 1
        key = counted_as(source)
        if len(self._from) < MAX_ADDRESSES:
            self._from.add(key)
        elif key not in self._from:
            self._more_addresses = True

    def counting(self) -> bool:
        """Whether a recording window holds wrong tokens its summary has not given yet."""
        return self._start is not None and self._unrecorded > 0

    def window_left(self, now: float | None = None) -> float:
        """Seconds until the recording window ends (0: none open, or over)."""
        if self._start is None:
            return 0.0
        moment = time.time() if now is None else now
        return max(0.0, self._start + self._record_window - moment)

    def summary(self, now: float | None = None, *, cut: bool = False) -> Unrecorded | None:
        """Once the recording window is over, what it left unrecorded (None: nothing, or
        the window is still open); each window's summary is given once. ``cut``: the
        gateway stops, so the open window ends now (its summary says so, ending now)."""
        moment = time.time() if now is None else now
        if self._start is None or (moment - self._start < self._record_window and not cut):
            return None
        start, end = self._start, min(moment, self._start + self._record_window)
        out = (
            Unrecorded(self._unrecorded, len(self._from), self._more_addresses, start, end)
            if self._unrecorded
            else None
        )
        self._start = None
        self._recorded = self._unrecorded = 0
        self._from.clear()
        self._more_addresses = False
        return out
