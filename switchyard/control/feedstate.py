"""What the feeder keeps about one deployment while it runs (see :mod:`.feeder`)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from nats.aio.subscription import Subscription

from switchyard.control.fairqueue import FairQueue
from switchyard.control.feedwindow import Window
from switchyard.control.held import Held
from switchyard.schemas.scheduling import NOT_FULL, FullMark, SchedState


@dataclass(slots=True)
class Deployment:
    """One deployment's held queue, slot count and saturation record."""

    id: str
    queue: FairQueue[Held] = field(default_factory=FairQueue)
    seen: set[int] = field(default_factory=set)
    pending: int = 0  # slots taken: dispatch waiting + in flight
    active: bool = False  # counting slots (consumer state read, acks tapped)
    acks: Subscription | None = None
    held: bool = False  # what the sched record says
    full: FullMark = NOT_FULL  # the record's hold bound mark (see holdbound)
    written: SchedState | None = None
    pumping: bool = False
    dirty: bool = False
    moving: int = 0  # moves started, not yet stored in dispatch (not in the consumer's count)
    # A move failed: no more until the retry half a second later (a move that fails at once,
    # disconnected with a full buffer, would otherwise be retried in a busy loop).
    stalled: bool = False
    retry: asyncio.TimerHandle | None = None
    moved: dict[str, int] = field(default_factory=dict)
    window: Window = field(default_factory=Window)
    # Expired requests whose delete from HOLD got no answer, with when it was first tried (the
    # loop's clock): tried again from the tick (see ``feeder.DELETE_RETRY_S``).
    undeleted: list[tuple[Held, float]] = field(default_factory=list)
