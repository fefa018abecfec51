"""How long a refused caller should wait before it tries a full queue again (``Retry-After``).

A constant answer (it was 1 s) sends every refused client back into the same full queue a
second later: a retry storm exactly while the deployment is overloaded. The head answers
instead with the time the queue needs to serve what it holds, from what it already knows
without asking anyone: the queue is full, so it holds its limit; the deployment serves
``concurrency`` requests at once, each taking about its recent time per request (the feeder's
measure in ``sy_sched``, :data:`DEFAULT_PER_REQUEST_S` when there is none). Nothing here runs
for a request that is not refused.

The answer is drawn at random from the second half of that time, in whole seconds (room opens
as the queue drains, and refused callers should not all come back at the same moment), and
bounded to :data:`MIN_S`..:data:`MAX_S`: a client waits at least a second, and never so long
that it gives up on a queue that has long had room (the drain rate is an estimate).

For a tenant's own HOLD queue (``tenant_queue_full``) the same sum is a lower bound: the
tenant gets only its fair share of the deployment while others wait too.
"""

from __future__ import annotations

import math
import random

from switchyard.errors import ServiceUnavailable

MIN_S = 1.0
MAX_S = 30.0
# Time per request of a deployment the feeder has not measured (or with fair queueing off,
# when heads follow no record): the feeder's own starting value.
DEFAULT_PER_REQUEST_S = 1.0


def drain_s(depth: int, concurrency: int, per_request_s: float) -> float:
    """Seconds a queue holding ``depth`` requests takes to serve them at ``concurrency`` at
    once, ``per_request_s`` each."""
    return max(0, depth) * max(0.0, per_request_s) / max(1, concurrency)


def retry_after(
    depth: int, concurrency: int, per_request_s: float, rng: random.Random | None = None
) -> float:
    """``Retry-After`` seconds for a caller a full queue of ``depth`` refused: a whole number
    drawn uniformly from the second half of :func:`drain_s`, within :data:`MIN_S`..:data:`MAX_S`.

    Whole seconds because HTTP's ``Retry-After`` is one (a fraction would be rounded up, and a
    spread within one second would reach HTTP clients as a single value); the span is at least
    two values wide (1 or 2 for a queue that drains within a second) so refused callers never
    all come back together.
    """
    high = int(min(MAX_S, max(MIN_S + 1, math.ceil(drain_s(depth, concurrency, per_request_s)))))
    low = int(max(MIN_S, math.ceil(high / 2)))
    return float((rng or random).randint(low, high))


def full(deployment: str, retry_after_s: float) -> ServiceUnavailable:
    """The answer for a request ``deployment`` would hold while it holds its total limit
    (``streams.hold_total_limit``): a full queue, so the head offers the request to the
    route's next candidate first (``Head._place``)."""
    return ServiceUnavailable(
        f"the queue for deployment {deployment} is full; retry later",
        code="queue_full",
        retry_after=retry_after_s,
    )
