"""Saying a thing at most once in a while.

A failure that repeats on every request or batch line (Redis/Valkey down, a key store that
cannot be read) must reach the log, but once per request would flood it and hide everything
else. Several services warn about such failures at most once per period; :class:`Throttle` is
that rule written once, with its clock injectable so tests need not wait.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class Throttle:
    """Answers True on the first call, then at most once per ``every_s`` seconds.

    Each True starts a new period, so a failure that goes on is reported every ``every_s``
    seconds and not more often, however often it is asked about.

    Args:
        every_s: the shortest time between two True answers.
        clock: seconds from any fixed origin that never go back (monotonic by default).
    """

    __slots__ = ("_clock", "_every_s", "_last")

    def __init__(self, every_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._every_s = every_s
        self._clock = clock
        self._last: float | None = None  # the clock at the last True; None before the first

    def ready(self) -> bool:
        """Whether to say it now: True (starting a new period) or False (said too recently)."""
        now = self._clock()
        if self._last is not None and now - self._last < self._every_s:
            return False
        self._last = now
        return True
