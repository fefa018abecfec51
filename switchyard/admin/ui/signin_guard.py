"""Wrong admin tokens at sign-in, counted per address: past a few, the address waits.

Guessing the token is hopeless (256 bits, compared in constant time), but every wrong one is
an audit entry, and the audit log keeps a bounded number of them: a client sending wrong
tokens as fast as it can would push real entries out of the admin views in minutes and out
of the stream in under an hour. So an address gets :data:`LIMIT` wrong tokens per
:data:`WINDOW_S`; past that a wrong one is refused (429) without an entry, and one entry
says the address was blocked. The right token still signs in (an address may be a shared
NAT). The count lives in the gateway's memory, like the sessions.
"""

from __future__ import annotations

import time
from collections import OrderedDict

LIMIT = 10
WINDOW_S = 300.0
MAX_ADDRESSES = 10_000  # the least recently failing are forgotten first


class SigninGuard:
    def __init__(self, limit: int = LIMIT, window_s: float = WINDOW_S) -> None:
        self._limit = limit
        self._window = window_s
        self._failures: OrderedDict[str, list[float]] = OrderedDict()

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
        times = self._recent(source, moment)
        if len(times) < self._limit:
            return 0.0
        return max(1.0, self._window - (moment - times[-self._limit]))

    def failed(self, source: str, now: float | None = None) -> bool:
        """Count a wrong token; True when it is the one that blocks the address."""
        moment = time.time() if now is None else now
        times = self._recent(source, moment)
        times.append(moment)
        self._failures[source] = times
        self._failures.move_to_end(source)
        while len(self._failures) > MAX_ADDRESSES:
            self._failures.popitem(last=False)
        return len(times) == self._limit
