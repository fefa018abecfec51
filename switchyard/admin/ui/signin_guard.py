"""Wrong admin tokens at sign-in, counted per address: past a few, the address waits.

Guessing the token is hopeless (256 bits, compared in constant time), but every wrong one is
an audit entry, and the audit log keeps a bounded number of them: a client sending wrong
tokens as fast as it can would push real entries out of the admin views in minutes and out
of the stream in under an hour. So an address gets :data:`LIMIT` wrong tokens per
:data:`WINDOW_S`; past that a wrong one is refused (429) without an entry, and one entry
says the address was blocked. An IPv6 client is counted by its /64 (one host holds all of
it). Clients with many addresses are bounded all together: at most :data:`RECORDED` wrong
tokens are recorded per window, the last saying that more go unrecorded. The right token
still signs in (an address may be a shared NAT). The counts live in the gateway's memory,
like the sessions.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict, deque
from enum import Enum

LIMIT = 10
WINDOW_S = 300.0
RECORDED = 200  # wrong tokens recorded per window, from every address together
MAX_ADDRESSES = 10_000  # the least recently failing are forgotten first


class Record(Enum):
    YES = "yes"
    LAST = "last"  # record it, and say that more go unrecorded for a while
    NO = "no"


def _counted_as(source: str) -> str:
    """The address a count is kept under: an IPv6 address's /64, else the address."""
    try:
        address = ipaddress.ip_address(source)
    except ValueError:
        return source
    if address.version == 6:
        return str(ipaddress.ip_network(f"{source}/64", strict=False))
    return source


class SigninGuard:
    def __init__(self, limit: int = LIMIT, window_s: float = WINDOW_S) -> None:
        self._limit = limit
        self._window = window_s
        self._failures: OrderedDict[str, list[float]] = OrderedDict()
        self._recorded: deque[float] = deque()

    def _recent(self, source: str, now: float) -> list[float]:
        times = [t for t in self._failures.get(source, ()) if now - t < self._window]
        if times:
            self._failures[source] = times
        else:
            self._failures.pop(source, None)
        return times

    def wait_s(self, source: str, now: float | None = None) -> float:
        """Seconds ``source`` must wait before it may try a token again (0: it may now)."""
        moment = time.time() if now is None else now
        times = self._recent(_counted_as(source), moment)
        if len(times) < self._limit:
            return 0.0
        return max(1.0, self._window - (moment - times[-self._limit]))

    def failed(self, source: str, now: float | None = None) -> bool:
        """Count a wrong token; True when it is the one that blocks the address."""
        moment = time.time() if now is None else now
        key = _counted_as(source)
        times = self._recent(key, moment)
        times.append(moment)
        self._failures[key] = times
        self._failures.move_to_end(key)
        while len(self._failures) > MAX_ADDRESSES:
            self._failures.popitem(last=False)
        return len(times) == self._limit

    def record(self, now: float | None = None) -> Record:
        """Whether a wrong token (not refused by :meth:`wait_s`) goes into the audit log."""
        moment = time.time() if now is None else now
        while self._recorded and moment - self._recorded[0] >= self._window:
            self._recorded.popleft()
        if len(self._recorded) >= RECORDED:
            return Record.NO
        self._recorded.append(moment)
        return Record.LAST if len(self._recorded) == RECORDED else Record.YES
