"""How long a deployment's calls take lately, so a request with less time left than even its
quick calls need is answered at once instead of started.

Under overload requests wait in the queue until their deadline is nearly spent. Starting one
with 200 ms left on a deployment whose calls take two seconds spends a provider slot, and
tokens the operator pays for, on an answer its caller will never see, while the requests
behind it, which could still finish, wait longer and miss theirs too: nearly nothing is
answered in time. So the model-proxy keeps the last ``WINDOW`` successful call times of each
deployment, per priority and streamed or not (a stream's call runs to its last chunk; batch
lines must not make interactive calls look slow), and does not start a request whose time left
is below their ``QUANTILE`` (a call most of the recent ones took longer than). Until
``MIN_SAMPLES`` calls were seen, every request is started; and once no call of the kind
succeeded for ``STALE_S`` the floor is dropped, so a floor learnt during a slow spell cannot
keep refusing, unrecorded, the short-deadline requests that would now finish.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

from switchyard.dialects.probes import COUNTS
from switchyard.errors import DeadlineExceeded
from switchyard.workers.modelproxy.job import Job

WINDOW = 64
STALE_S = 120.0
MIN_SAMPLES = 16
QUANTILE = 0.1
# The floor is recomputed after this many new calls, not on every one (a sort of 64 floats).
REFRESH_EVERY = 8


class _Recent:
    __slots__ = ("floor", "fresh", "last_at", "seconds")

    def __init__(self) -> None:
        self.seconds: deque[float] = deque(maxlen=WINDOW)
        self.floor = 0.0
        self.fresh = 0
        self.last_at = 0.0

    def add(self, seconds: float, now: float) -> None:
        self.last_at = now
        self.seconds.append(seconds)
        self.fresh += 1
        if len(self.seconds) >= MIN_SAMPLES and (self.fresh >= REFRESH_EVERY or not self.floor):
            ordered = sorted(self.seconds)
            self.floor = ordered[math.floor(QUANTILE * (len(ordered) - 1))]
            self.fresh = 0


class CallTimes:
    """Recent successful call times per (deployment, priority, streamed)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._recent: dict[tuple[str, str, bool], _Recent] = {}
        self._clock = clock

    def record(self, deployment: str, priority: str, stream: bool, seconds: float) -> None:
        recent = self._recent.get((deployment, priority, stream))
        if recent is None:
            recent = self._recent[(deployment, priority, stream)] = _Recent()
        recent.add(seconds, self._clock())

    def floor(self, deployment: str, priority: str, stream: bool) -> float:
        """The least time a call of this kind needs lately; 0 while too few were seen, or
        when none succeeded for :data:`STALE_S`."""
        recent = self._recent.get((deployment, priority, stream))
        if recent is None or self._clock() - recent.last_at > STALE_S:
            return 0.0
        return recent.floor

    def forget(self, deployment: str) -> None:
        """A deployment left the route table: its calls say nothing about a later one."""
        for kind in [k for k in self._recent if k[0] == deployment]:
            del self._recent[kind]


def enough_time(job: Job, pace: CallTimes) -> None:
    """Refuse to start a call its deadline leaves too little time for.

    Raises:
        DeadlineExceeded: the deadline passed while the request was queued, or less time
            is left than this deployment's quick calls take.
    """
    if job.deadline <= job.started:
        raise DeadlineExceeded("the request deadline passed while it was queued")
    if job.env.op in COUNTS:  # milliseconds, whatever chat calls take
        return
    floor = pace.floor(job.deployment_id, job.env.priority, job.stream)
    left = job.deadline - time.time()
    if floor and left < floor:
        raise DeadlineExceeded(
            f"the request has {left:.2f}s left before its deadline, less than calls to "
            f"this deployment take lately ({floor:.2f}s); not started",
            code="deadline_too_short",
        )
