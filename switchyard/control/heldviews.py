"""What the feeder shows of a deployment's held requests: its queues, and how long they wait."""

from __future__ import annotations

from switchyard.control.fairqueue import FairQueue
from switchyard.control.held import Held
from switchyard.schemas import monitor as m


def held_queues(queue: FairQueue[Held], now: float) -> list[m.HeldQueue]:
    """One row per (priority, tenant) queue with requests waiting (``now``: Unix seconds)."""
    return [
        m.HeldQueue(
            priority=priority,
            tenant=first.owner,
            waiting=count,
            oldest_wait_s=round(max(0.0, now - first.stored_at), 3),
        )
        for priority, _, count, first in queue.depths()
    ]


def waiting(queue: FairQueue[Held], now: float) -> tuple[int, float, int]:
    """Requests of a deployment waiting in HOLD, the age of the oldest (seconds), and the most
    one tenant has waiting at one priority (one HOLD subject, which
    ``streams.hold_tenant_limit`` bounds; requests moved and not yet purged, which JetStream
    still counts, are not in it)."""
    if not len(queue):
        return 0, 0.0, 0
    depths = list(queue.depths())
    oldest = min(first.stored_at for _, _, _, first in depths)
    fullest = max(count for _, _, count, _ in depths)
    return len(queue), max(0.0, now - oldest), fullest
