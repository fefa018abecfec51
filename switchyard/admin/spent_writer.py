"""Writes the spent marks the heads refuse NATS callers by (:mod:`switchyard.limits.spent_marks`).

The budget watch hands over, after each scan, the marks of every usable budgeted key whose
spend reached its budget, and the ids of the other usable budgeted keys. A mark is written
when new (a key just spent its budget, or spent a budget raised since), again every
``spent_marks.REWRITE_S`` while true, stamped with the time (heads ignore a mark nobody
rewrote for ``spent_marks.STALE_S``), and deleted when its key no longer has one: the budget
was raised or removed, the period reset, the spend went down, or the key was revoked or
deleted. A mark this process did not write (another gateway's, or one left by this gateway
before a restart) is deleted too when its key is seen not spent: once per key in the life of
the process (a delete of a mark that is not there costs the bucket a small delete marker),
at most ``SWEEP_PER_SCAN`` per scan.

The bucket is CORE's; the admin identity publishes into it through a write-only import
(``natsconf``), so writes are JetStream publishes on the bucket's subjects, and a delete is
one with a ``KV-Operation: DEL`` header, as nats-py's own KV delete sends.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

import msgspec
from nats.errors import Error as NatsError
from nats.js import JetStreamContext

from switchyard.bus import subjects
from switchyard.limits import spent_marks
from switchyard.limits.spent_marks import SpentMark
from switchyard.runtime.throttle import Throttle

log = logging.getLogger("switchyard.admin.budget")

WARN_EVERY_S = 60.0
SWEEP_PER_SCAN = 100  # deletes of marks this process did not write, per scan at most


def _subject(key_id: str) -> str:
    return f"$KV.{subjects.KEY_SPENT_BUCKET}.{spent_marks.entry_name(key_id)}"


class SpentWriter:
    """Keeps the spent-marks bucket in step with the marks of each scan."""

    def __init__(self, js: JetStreamContext, clock: Callable[[], float] = time.time) -> None:
        self._js = js
        self._clock = clock  # the marks' written_at (unix time)
        self._written: dict[str, tuple[SpentMark, float]] = {}  # key id -> mark, when
        self._clean: set[str] = set()  # unspent keys whose mark this process deleted
        self._warn = Throttle(WARN_EVERY_S)
        self._timed_out = False  # a write of this scan had no answer: the rest wait
        self._failed = False  # a write of this scan failed

    @property
    def written(self) -> dict[str, SpentMark]:
        """The marks this process wrote and did not delete since."""
        return {key_id: mark for key_id, (mark, _) in self._written.items()}

    async def sync(
        self, marks: Iterable[SpentMark], unspent: Iterable[str] = (), now: float | None = None
    ) -> bool:
        """Write the marks that are new or changed (or due again), delete those gone, and
        those of the ``unspent`` keys (budgeted, usable, not spent) that this process did not
        delete yet. A write that fails is tried again at the next scan (and logged at most
        every minute); the first that times out ends the scan's writes, so a bucket that
        cannot be written costs a scan one timeout, not one per spent key.

        Returns whether every write due went through (False: one failed, or was left for the
        next scan)."""
        moment = time.monotonic() if now is None else now
        current = {mark.key_id: mark for mark in marks}
        self._clean.intersection_update(unspent := set(unspent))
        self._timed_out = self._failed = False
        for key_id, mark in current.items():
            before = self._written.get(key_id)
            fresh = before is not None and moment - before[1] < spent_marks.REWRITE_S
            if before is not None and before[0] == mark and fresh:
                continue
            if self._timed_out:
                return False
            # (Spend that grew is written too: a budget raised to under it must still refuse.
            # A refused key's spend stops growing, so this is rare.)
            stamped = msgspec.structs.replace(mark, written_at=self._clock())
            if await self._publish(key_id, spent_marks.encode(stamped)):
                self._written[key_id] = (mark, moment)
                if before is None:
                    log.info(
                        "key %s used up its budget (period %s): NATS callers are refused",
                        key_id,
                        mark.period_id,
                    )
        for key_id in [k for k in self._written if k not in current]:
            if self._timed_out:
                return False
            if await self._publish(key_id, b"", delete=True):
                del self._written[key_id]
                if key_id in unspent:
                    self._clean.add(key_id)
        swept = [k for k in unspent if k not in self._clean and k not in self._written]
        for key_id in swept[:SWEEP_PER_SCAN]:
            if self._timed_out:
                return False
            if await self._publish(key_id, b"", delete=True):
                self._clean.add(key_id)
        return not self._failed

    async def _publish(self, key_id: str, data: bytes, *, delete: bool = False) -> bool:
        headers = {"KV-Operation": "DEL"} if delete else None
        try:
            await self._js.publish(_subject(key_id), data, headers=headers)
        except (NatsError, TimeoutError) as exc:
            # No answer (nats-py's TimeoutError is both): the bucket cannot be written now
            # (the older NATS config, or CORE unavailable). The scan's other writes would
            # each wait as long, so they wait for the next scan.
            self._timed_out = isinstance(exc, TimeoutError)
            self._failed = True
            if self._warn.ready():
                log.warning(
                    "could not %s the spent mark of key %s (%s): NATS callers of keys that "
                    "used up their budget are refused only once it is written (is the NATS "
                    "config rendered and CORE provisioned since the upgrade?)",
                    "delete" if delete else "write",
                    key_id,
                    type(exc).__name__,
                )
            return False
        return True
