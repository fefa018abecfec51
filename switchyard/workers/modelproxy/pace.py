"""How long a deployment's calls take lately, so a request with less time left than even its
quick calls need is answered at once instead of started.

Under overload requests wait in the queue until their deadline is nearly spent. Starting one
with 200 ms left on a deployment whose calls take two seconds spends a provider slot, and
tokens the operator pays for, on an answer its caller will never see, while the requests
behind it, which could still finish, wait longer and miss theirs too: nearly nothing is
answered in time. So the model-proxy keeps the last ``WINDOW`` successful call times of each
deployment (streamed and not apart: a stream's call runs to its last chunk) and does not start
a request whose time left is below their ``QUANTILE`` (a call most of the recent ones took
longer than). Until ``MIN_SAMPLES`` calls were seen, every request is started.
"""

from __future__ import annotations

import math
from collections import deque

WINDOW = 64
MIN_SAMPLES = 16
QUANTILE = 0.1
# The floor is recomputed after this many new calls, not on every one (a sort of 64 floats).
REFRESH_EVERY = 8


class _Recent:
    __slots__ = ("floor", "fresh", "seconds")

    def __init__(self) -> None:
        self.seconds: deque[float] = deque(maxlen=WINDOW)
        self.floor = 0.0
        self.fresh = 0

    def add(self, seconds: float) -> None:
        self.seconds.append(seconds)
        self.fresh += 1
        if len(self.seconds) >= MIN_SAMPLES and (self.fresh >= REFRESH_EVERY or not self.floor):
            ordered = sorted(self.seconds)
            self.floor = ordered[math.floor(QUANTILE * (len(ordered) - 1))]
            self.fresh = 0


class CallTimes:
    """Recent successful call times per (deployment, streamed)."""

    def __init__(self) -> None:
        self._recent: dict[tuple[str, bool], _Recent] = {}

    def record(self, deployment: str, stream: bool, seconds: float) -> None:
        recent = self._recent.get((deployment, stream))
        if recent is None:
            recent = self._recent[(deployment, stream)] = _Recent()
        recent.add(seconds)

    def floor(self, deployment: str, stream: bool) -> float:
        """The least time a call of this kind needs lately; 0 while too few were seen."""
        recent = self._recent.get((deployment, stream))
        return recent.floor if recent is not None else 0.0

    def forget(self, deployment: str) -> None:
        """A deployment left the route table: its calls say nothing about a later one."""
        for stream in (False, True):
            self._recent.pop((deployment, stream), None)
