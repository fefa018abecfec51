"""What one key's batch lines in this runner hold of its budget until their cost is in its spend.

The runner reads a key's spend at most once a second (:class:`~switchyard.limits.budgets.
BudgetCheck`); lines sent meanwhile, and lines that finished since the read, cost nothing in
it. So each line sent holds the estimated cost of one request of its model (the edge's
estimate, learnt by accounting) from the moment it is let through until a spend read taken
after its answer is in hand: :class:`KeyHolds` counts those holds per key, across every batch
of the key this runner runs, and a line waits while the key's spend plus its holds reach the
budget (:mod:`~switchyard.workers.batch.budget`).

A finished line's cost lands in the spend counter shortly after its answer (accounting applies
usage within ~100 ms), so its hold is dropped only by a read sent :data:`ACCOUNTING_LAG_S`
after the answer: a read sooner could miss the cost, and the hold with it. A line that was not
sent after all (cancelled, the window closed, another line found the budget spent) ends its
hold at once.

Lines that must wait take their turn in order (:meth:`KeyHolds.queue`): a line that comes
later, or a waiting line behind another, waits too, even when a read it made itself freed
room, so the room goes to the oldest waiting line. Otherwise a fresh line whose own spend read
dropped a finished hold overtook lines already waiting (a CI run saw line 5 of a batch run
and line 4 refused), and which of a key's lines ran past the budget was a race.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque

# How long after a line's answer a spend read is trusted to include its cost.
ACCOUNTING_LAG_S = 0.5


class Hold:
    """One line's hold on its key's budget: ``end`` it once the line's attempt is over."""

    __slots__ = ("_ended", "_holds", "nano")

    def __init__(self, holds: KeyHolds, nano: int) -> None:
        self._holds = holds
        self.nano = nano
        self._ended = False

    def end(self, *, sent: bool) -> None:
        """The attempt is over; ``sent``: it went on the bus (it may be billed), so its hold
        lasts until a later spend read. Ending twice does nothing."""
        if not self._ended:
            self._ended = True
            self._holds.ended(self.nano, sent=sent)


class KeyHolds:
    """The holds of one key's lines: running (sent or about to be), and finished since the
    spend read that will include their cost."""

    def __init__(self, *, lag_s: float = ACCOUNTING_LAG_S) -> None:
        self._lag_s = lag_s
        self.running = 0
        self._running_nano = 0
        self._finished: deque[tuple[float, int]] = deque()  # (answered at, nano), in order
        self._finished_nano = 0
        self._read_at = float("-inf")  # the latest spend read seen
        self.last_used = time.monotonic()
        self._changed = asyncio.Event()
        self._waiting: deque[object] = deque()  # the places of lines waiting, oldest first

    def held(self, read_at: float) -> tuple[int, int]:
        """What the key's lines hold (nano-USD, lines) beside a spend read sent at
        ``read_at`` (monotonic): the finished lines it includes no longer hold anything."""
        if read_at > self._read_at:
            self._read_at = read_at
            while self._finished and self._finished[0][0] + self._lag_s <= read_at:
                self._finished_nano -= self._finished.popleft()[1]
            self._notify()  # a new read: lines waiting check again
        return self._running_nano + self._finished_nano, self.running + len(self._finished)

    def take(self, nano: int) -> Hold:
        """A line is let through, holding ``nano``."""
        self.running += 1
        self._running_nano += nano
        self.last_used = time.monotonic()
        return Hold(self, nano)

    def ended(self, nano: int, *, sent: bool) -> None:
        self.running -= 1
        self._running_nano -= nano
        now = time.monotonic()
        self.last_used = now
        if sent:
            # What it holds is unchanged until a read drops it: waiting lines need no wake.
            self._finished.append((now, nano))
            self._finished_nano += nano
        else:
            self._notify()

    def queue(self) -> object:
        """A place in line for a line that must wait (give it to :meth:`behind`, then
        :meth:`leave` it however the line goes on)."""
        place = object()
        self._waiting.append(place)
        return place

    def behind(self, place: object | None) -> bool:
        """Whether an older line waits than the one at ``place`` (None: a line not waiting
        yet, behind every waiting one)."""
        return bool(self._waiting) and self._waiting[0] is not place

    def leave(self, place: object) -> None:
        """The line at ``place`` waits no more: the next one checks again at once."""
        with contextlib.suppress(ValueError):
            self._waiting.remove(place)
        self._notify()

    def idle_since(self, before: float) -> bool:
        """No line runs, waits, or finished or started since ``before`` (monotonic): a read
        made now covers every finished one, and nobody waits on these holds any more."""
        return self.running == 0 and not self._waiting and self.last_used < before

    async def changed(self, timeout: float) -> None:
        """Return when the holds drop or a new spend read is seen, or after ``timeout``."""
        event = self._changed
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, timeout)):
                await event.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()
