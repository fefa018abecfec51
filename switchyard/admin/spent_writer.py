"""Writes the spent marks the heads refuse NATS callers by (:mod:`switchyard.limits.spent_marks`).

The budget watch hands over, after each scan, the marks of every usable budgeted key whose
spend reached its budget, and the ids of the other usable budgeted keys. A mark is written
when new (a key just spent its budget, or spent a budget raised since), again at the last
scan before ``spent_marks.REWRITE_S`` has passed while true (:func:`rewrite_period`; every
scan when the interval is longer), stamped with the time and that period (``keep_s``) (heads
ignore a mark nobody rewrote for ``spent_marks.STALE_S``), and deleted when its key no
longer has one: the budget was raised or removed, the period reset, the spend went down, or
the key was revoked or deleted.

A mark this process did not write (another gateway's, or one left by this gateway before a
restart) may be deleted when its key is seen not spent (the *sweep*, at most
``SWEEP_PER_SCAN`` keys a scan), but only when nobody keeps it: the mark is read first, and
deleted only if its ``written_at`` is older than its writer lets it get while keeping it
(``kept_s``: the ``keep_s`` the writer stamped on it, its rewrite period, or for a mark
without one the longest any writer's can be, and 2 minutes for clocks and slow scans), by a
compare-and-delete on the revision read (a rewrite in between survives). A fresh mark is
looked at again once it could be stale; a key with no mark costs nothing (no delete marker);
a key found without a mark, or whose mark was deleted, is not looked at again in the life of
the process. So another replica's mark is never deleted while that replica keeps it (it sees
the key spent when this one does not: a scan a moment apart, a key record not yet followed),
and a mark nobody keeps goes once read and that stale (the first round of reads after a
start takes one scan per ``SWEEP_PER_SCAN`` unspent keys: with many keys, a mark may lapse at
the heads first).

The bucket is CORE's; the admin identity publishes into it through an import (``natsconf``),
so writes are JetStream publishes on the bucket's subjects, and a delete is one with a
``KV-Operation: DEL`` header (and ``Nats-Expected-Last-Subject-Sequence`` for a
compare-and-delete), as nats-py's own KV delete sends. It reads one mark by name with a
direct get through a second import, under ``subjects.KEY_SPENT_DIRECT_GET_PREFIX``; under
an older NATS config that read gets no answer, and the sweep waits ``READ_PAUSE_S``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable

import msgspec
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from nats.js.errors import APIError

from switchyard.bus import subjects
from switchyard.limits import spent_marks
from switchyard.limits.spent_marks import SpentMark
from switchyard.runtime.throttle import Throttle

log = logging.getLogger("switchyard.admin.budget")

WARN_EVERY_S = 60.0
SWEEP_PER_SCAN = 100  # marks this process did not write looked at, per scan at most
KEPT_SLACK_S = 120.0  # a kept mark's age past its writer's period: clocks, slow scans
READ_TIMEOUT_S = 2.0
READ_PAUSE_S = 600.0  # after a read without an answer (the older NATS config), no sweep
_WRONG_LAST_SEQUENCE = 10071  # JetStream: the subject's last revision is not the expected one


def _subject(key_id: str) -> str:
    return f"$KV.{subjects.KEY_SPENT_BUCKET}.{spent_marks.entry_name(key_id)}"


# The longest a writer lets a mark get while keeping it: admin.budget_watch_s's largest value
# (a writer scanning that seldom rewrites at every scan; one before ``keep_s`` rewrote at its
# first scan at least REWRITE_S after the last write: never later than this either).
LONGEST_KEEP_S = 1200.0


def rewrite_period(interval: float) -> float:
    """How often a writer scanning every ``interval`` writes a mark still true again: at its
    last scan before ``REWRITE_S`` has passed (at every scan when the interval is longer)."""
    return interval * max(1, math.floor(spent_marks.REWRITE_S / interval))


def kept_s(keep_s: float) -> float:
    """How old a mark whose writer stamped ``keep_s`` (0: none, an older writer) can get
    while that writer keeps it."""
    return (keep_s or LONGEST_KEEP_S) + KEPT_SLACK_S


class SpentWriter:
    """Keeps the spent-marks bucket in step with the marks of each scan."""

    def __init__(
        self,
        nc: NATS,
        clock: Callable[[], float] = time.time,
        *,
        timeout: float = 5.0,
        interval: float = 30.0,
    ) -> None:
        self._nc = nc
        self._js = nc.jetstream(timeout=timeout)
        self._clock = clock  # the marks' written_at (unix time)
        self._interval = interval
        self._keep_s = rewrite_period(interval)  # stamped on each mark (see kept_s)
        self._written: dict[str, tuple[SpentMark, float]] = {}  # key id -> mark, when
        self._clean: set[str] = set()  # unspent keys found without a mark, or swept
        self._later: dict[str, float] = {}  # unspent key id -> when its kept mark may be stale
        self._reads_from = 0.0  # monotonic: no sweep before (a read got no answer)
        self._warn = Throttle(WARN_EVERY_S)  # the marks' writes and deletes
        # The sweep's reads without an answer, reads answered with an error status, and
        # deletes that failed: each its own throttle, so one does not hide another.
        self._read_warn = Throttle(WARN_EVERY_S)
        self._status_warn = Throttle(WARN_EVERY_S)
        self._delete_warn = Throttle(WARN_EVERY_S)
        self._timed_out = False  # a write of this scan had no answer: the rest wait
        self._failed = False  # a write of this scan failed

    @property
    def written(self) -> dict[str, SpentMark]:
        """The marks this process wrote and did not delete since."""
        return {key_id: mark for key_id, (mark, _) in self._written.items()}

    async def sync(
        self,
        marks: Iterable[SpentMark],
        unspent: Iterable[str] = (),
        now: float | None = None,
        *,
        kept: Iterable[str] = (),
    ) -> bool:
        """Write the marks that are new or changed (or due again), delete those gone, and
        sweep the stale marks of the ``unspent`` keys (budgeted, usable, not spent) that
        others left. A write that fails is tried again at the next scan (and logged at most
        every minute); the first that times out ends the scan's writes, so a bucket that
        cannot be written costs a scan one timeout, not one per spent key.

        The marks of the ``kept`` keys (whose spend could not be read) are left as they are.

        Returns whether every write due went through (False: one failed, or was left for the
        next scan). The sweep is best effort and not part of the answer: a read or delete of
        it that fails is logged (at most once a minute) and tried again later."""
        moment = time.monotonic() if now is None else now
        current = {mark.key_id: mark for mark in marks}
        self._clean.intersection_update(unspent := set(unspent))
        self._timed_out = self._failed = False
        for key_id, mark in current.items():
            before = self._written.get(key_id)
            # Written again at the last scan before REWRITE_S passes, not the first after.
            fresh = (
                before is not None and moment - before[1] + self._interval <= spent_marks.REWRITE_S
            )
            if before is not None and before[0] == mark and fresh:
                continue
            if self._timed_out:
                return False
            # (Spend that grew is written too: a budget raised to under it must still refuse.
            # A refused key's spend stops growing, so this is rare.)
            stamped = msgspec.structs.replace(mark, written_at=self._clock(), keep_s=self._keep_s)
            if await self._publish(key_id, spent_marks.encode(stamped)):
                self._written[key_id] = (mark, moment)
                if before is None:
                    log.info(
                        "key %s used up its budget (period %s): NATS callers are refused",
                        key_id,
                        mark.period_id,
                    )
        left = set(kept)
        for key_id in [k for k in self._written if k not in current and k not in left]:
            if self._timed_out:
                return False
            if await self._publish(key_id, b"", delete=True):
                del self._written[key_id]
                if key_id in unspent:
                    self._clean.add(key_id)
        await self._sweep(unspent, moment)
        return not self._failed

    async def _sweep(self, unspent: set[str], moment: float) -> None:
        """Delete the stale marks of ``unspent`` keys that this process did not write (see
        the module docstring); a read without an answer ends it for ``READ_PAUSE_S``."""
        for key_id in [k for k in self._later if k not in unspent]:
            del self._later[key_id]
        due = [
            k
            for k in unspent
            if k not in self._clean and k not in self._written and self._later.get(k, 0) <= moment
        ]
        if not due or moment < self._reads_from or self._timed_out:
            return
        for key_id in due[:SWEEP_PER_SCAN]:
            found = await self._read(key_id)
            if found is None:  # no answer: the older NATS config, or CORE unavailable
                self._reads_from = moment + READ_PAUSE_S
                return
            mark, revision = found
            if not revision:  # no mark (or a delete marker): nothing to delete
                self._clean.add(key_id)
                continue
            age = self._clock() - (mark.written_at if mark is not None else 0.0)
            kept = kept_s(mark.keep_s if mark is not None else 0.0)
            if age <= kept:  # somebody keeps it: look again once it could be stale
                self._later[key_id] = moment + kept - age
                continue
            deleted = await self._delete_unchanged(key_id, revision)
            if deleted is None:
                return
            if deleted:
                self._clean.add(key_id)
                self._later.pop(key_id, None)
            else:  # written again since the read: kept after all
                self._later[key_id] = moment + kept_s(0.0)

    async def _read(self, key_id: str) -> tuple[SpentMark | None, int] | None:
        """The key's mark in the bucket and its revision ((None, 0): none; a mark that
        cannot be read comes with its revision: stale to whoever reads it), or None when the
        read got no answer (a timeout, no responders, or any other NATS error: the
        connection closed, draining, its buffer full)."""
        subject = f"{subjects.KEY_SPENT_DIRECT_GET_PREFIX}.{_subject(key_id)}"
        try:
            msg = await self._nc.request(subject, b"", timeout=READ_TIMEOUT_S)
        except NatsError as exc:
            if self._read_warn.ready():
                log.warning(
                    "could not read the spent mark of key %s (%s): marks other gateways left "
                    "are not swept (the heads ignore them 30 minutes after their last write); "
                    "is the NATS config rendered since the upgrade?",
                    key_id,
                    type(exc).__name__,
                )
            return None
        headers = msg.headers or {}
        if headers.get("Status") == "404" or headers.get("KV-Operation") in ("DEL", "PURGE"):
            return None, 0
        if (status := headers.get("Status")) is not None:
            if self._status_warn.ready():
                log.warning(
                    "reading the spent mark of key %s was answered with status %s (%s): marks "
                    "other gateways left are not swept for %.0f minutes",
                    key_id,
                    status,
                    headers.get("Description", ""),
                    READ_PAUSE_S / 60,
                )
            return None
        revision = int(headers.get("Nats-Sequence", "0"))
        try:
            return spent_marks.decode(msg.data), revision
        except spent_marks.READ_ERRORS:
            return None, revision

    async def _delete_unchanged(self, key_id: str, revision: int) -> bool | None:
        """Delete the key's mark if ``revision`` is still its last: True when deleted, False
        when it was written since, None when the bucket did not take the delete."""
        headers = {"KV-Operation": "DEL", "Nats-Expected-Last-Subject-Sequence": str(revision)}
        try:
            await self._js.publish(_subject(key_id), b"", headers=headers)
        except (NatsError, TimeoutError) as exc:  # (APIError is a NatsError)
            if isinstance(exc, APIError) and exc.err_code == _WRONG_LAST_SEQUENCE:
                return False
            if self._delete_warn.ready():
                log.warning(
                    "could not delete the stale spent mark of key %s (%s): tried again at a "
                    "later scan (the heads ignore it 30 minutes after its last write)",
                    key_id,
                    type(exc).__name__,
                )
            return None
        log.info("deleted the stale spent mark of key %s, which is not spent", key_id)
        return True

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
