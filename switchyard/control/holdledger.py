"""Which moved requests may leave HOLD, and when: the feeder's purge bookkeeping.

Pure logic, no I/O. The feeder reads HOLD in stream order and moves each tenant's requests first
in, first out, so on one tenant subject everything below the oldest request still waiting (or
being moved) is finished: one ``STREAM.PURGE`` with ``{"filter": subject, "seq": below}``
removes all of it. A request whose move failed goes back to the head of its tenant's line and
is waiting again, so it holds the bound down until it has moved.

Purges are batched: a subject is purged once ``batch`` of its requests are finished, else when
the feeder's timer (``PURGE_S``) fires. Until purged, finished requests still count against
the tenant's HOLD limit (discard-new per subject), at most ``batch`` plus what finishes in
one timer period.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class _Subject:
    deployment: str
    waiting: set[int] = field(default_factory=set)  # read and not finished: queued or moving
    finished: list[int] = field(default_factory=list)  # moved or dropped, still in HOLD


@dataclass(frozen=True, slots=True)
class Purge:
    """One purge to send: every message of ``subject`` below ``below`` (the ``finished``)."""

    subject: str
    deployment: str
    below: int
    finished: tuple[int, ...]


class HoldLedger:
    def __init__(self, batch: int) -> None:
        self._batch = batch
        self._subjects: dict[str, _Subject] = {}

    def __len__(self) -> int:
        """Tenant subjects the ledger tracks."""
        return len(self._subjects)

    def _state(self, subject: str, deployment: str) -> _Subject:
        state = self._subjects.get(subject)
        if state is None:
            state = self._subjects[subject] = _Subject(deployment)
        return state

    def read(self, subject: str, deployment: str, seq: int) -> None:
        """The feeder read ``seq`` from HOLD and queued it."""
        self._state(subject, deployment).waiting.add(seq)

    def finish(self, subject: str, deployment: str, seq: int) -> bool:
        """``seq`` moved into dispatch (or its caller gave up). True when its subject has a
        full batch to purge now rather than at the next timer."""
        state = self._state(subject, deployment)
        state.waiting.discard(seq)
        state.finished.append(seq)
        return len(state.finished) >= self._batch

    def behind(self, subject: str, seq: int) -> int:
        """Finished requests of ``subject`` above ``seq``: kept in HOLD while ``seq`` waits."""
        state = self._subjects.get(subject)
        return 0 if state is None else sum(1 for s in state.finished if s > seq)

    def pending(self) -> bool:
        """Whether any finished request still waits for a purge."""
        return any(state.finished for state in self._subjects.values())

    def due(self) -> list[Purge]:
        """The purges to send now, taken out of the ledger (:meth:`failed` puts one back).
        Subjects with nothing left to track are forgotten."""
        purges = []
        for name, state in list(self._subjects.items()):
            if not state.finished:
                if not state.waiting:
                    del self._subjects[name]
                continue
            below = min(state.waiting) if state.waiting else max(state.finished) + 1
            gone = tuple(seq for seq in state.finished if seq < below)
            if gone:
                state.finished = [seq for seq in state.finished if seq >= below]
                purges.append(Purge(name, state.deployment, below, gone))
        return purges

    def failed(self, purge: Purge) -> None:
        """HOLD did not take ``purge``: its requests wait for the next one."""
        self._state(purge.subject, purge.deployment).finished.extend(purge.finished)
