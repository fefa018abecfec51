"""How many client keys are close to their budget, as a metric without a per-key label.

An alert on "a key near its budget" needs to know about every key, but a label per key would
make the metrics grow with the key count (and put key ids in every scrape). So the gateway,
which already holds both inputs (the key records, followed live from the keys bucket, and read
access to the spend counters), counts them: every ``admin.budget_watch_s`` it reads the current
period's spend of every usable key that has a budget (one MGET per 500 keys) and exports

* ``switchyard_keys_with_budget``: usable keys with a budget;
* ``switchyard_keys_near_budget{threshold="0.8"|"1"}``: those that spent at least that share.

Which keys they are is one admin API call away (``GET /admin/v1/keys`` lists each key with its
spend). Every gateway replica counts the same keys, so dashboards and alerts take the ``max``.

It also exports when it last completed a scan (``switchyard_budget_watch_last_scan_timestamp_
seconds``: spend read, every mark due written) and its interval, so an alert can tell a watch
that stopped keeping the marks (Valkey or the bucket unavailable) from one that runs.

Each scan also hands the keys whose budget is used up to :class:`SpentWriter`, which marks
them in the ``sy_key_spent`` bucket the heads follow: how NATS callers, which no edge checks,
are held to budgets (:mod:`switchyard.limits.spent_marks`). Every replica writes the same marks.
The first scan runs in the background, not as part of the gateway's start: a bucket the
gateway cannot write (an older version's NATS config) costs a scan one JetStream timeout,
which held every gateway's start 5 s.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence

import msgspec
import redis.exceptions
from nats.aio.client import Client as NATS

from switchyard.admin.spend import SpendReader
from switchyard.admin.spent_writer import SpentWriter, rewrite_period
from switchyard.bus import subjects
from switchyard.limits import keys as rk
from switchyard.limits import periods, spent_marks
from switchyard.runtime import semconv as sc
from switchyard.runtime.kvwatch import KvFollower
from switchyard.runtime.metrics import Metrics
from switchyard.runtime.tasks import TaskSupervisor
from switchyard.runtime.throttle import Throttle
from switchyard.schemas.keys import KEY_DECODER, RECORD_PREFIX, ClientKey

log = logging.getLogger("switchyard.admin.budget")

UNEXPECTED_EVERY_S = 600.0  # a scan failing for another reason is logged this often at most
RETRY_S = 30.0  # after a scan that failed, the next runs this soon (or at the interval if sooner)


def next_scan_in(interval: float, completed: bool) -> float:
    """How long to wait before the next scan: the interval after a complete scan, at most
    ``RETRY_S`` after one that failed (raised, or left a mark due unwritten). With a long
    interval a single failed scan must not wait the full interval: the marks it did not
    rewrite would lapse at the heads, and the sweep's promise (a kept mark is never older
    than its writer's rewrite period + 2 minutes) would break."""
    return interval if completed else min(interval, RETRY_S)


def threshold_label(share: float) -> str:
    """``0.8`` -> ``"0.8"``, ``1.0`` -> ``"1"``."""
    return f"{share:g}"


def fail_open_after_s(interval: float) -> tuple[float, float]:
    """How far into an outage (seconds) that stops the marks being rewritten the heads let
    them lapse, from the first to the last: each lapses ``STALE_S`` after its last write, and
    at the outage's start that write was up to one rewrite period ago."""
    return spent_marks.STALE_S - rewrite_period(interval), spent_marks.STALE_S


def count_near(
    budgets: Sequence[float], spent_nano: Sequence[int], thresholds: Iterable[float]
) -> dict[float, int]:
    """How many keys spent at least each threshold's share of their budget (in dollars)."""
    counts = dict.fromkeys(thresholds, 0)
    for budget, spent in zip(budgets, spent_nano, strict=True):
        share = spent / rk.NANO / budget
        for threshold in counts:
            if share >= threshold:
                counts[threshold] += 1
    return counts


class BudgetWatch:
    """Follows the client keys and counts those near their budget (see the module docstring)."""

    def __init__(self, nc: NATS, spend: SpendReader, metrics: Metrics, interval: float) -> None:
        self._spend = spend
        self._interval = interval
        self._keys: dict[str, ClientKey] = {}
        self.marks = SpentWriter(nc, interval=interval)
        self._follower = KvFollower(nc.jetstream(timeout=5), subjects.KEYS_BUCKET, self._on_entry)
        self._loops = TaskSupervisor("budget-watch")
        self.with_budget = 0
        self.near: dict[float, int] = dict.fromkeys(sc.BUDGET_THRESHOLDS, 0)
        # Unix time of the last complete scan; until the first, when the watch started: a
        # gateway that starts while Valkey is down shows as stalled since its start (as 0 it
        # was "stalled" since 1970), and one that starts fine is not stalled meanwhile.
        self.last_scan = time.time()
        self.completed_scans = 0  # by this process: 0 while none ever completed (crash loops)
        self._unreadable_since: float | None = None  # monotonic: spend unreadable since
        # One throttle per exception type, so a second, different failure is not hidden.
        self._unexpected: dict[type[BaseException], Throttle] = {}
        self._unexpected_since: float | None = None  # monotonic: scans raise since
        self._unreadable_keys: set[str] = set()  # ids of keys whose spend counter is garbled
        metrics.gauge_callback(
            sc.KEYS_WITH_BUDGET,
            "Usable client keys that have a budget (every gateway counts all of them).",
            (),
            lambda: [((), float(self.with_budget))],
        )
        metrics.gauge_callback(
            sc.KEYS_NEAR_BUDGET,
            "Client keys whose spend in the current budget period reached `threshold` times "
            "their budget (1: used up, refused until the period resets).",
            [sc.THRESHOLD],
            lambda: [((threshold_label(t),), float(n)) for t, n in self.near.items()],
        )
        metrics.gauge_callback(
            sc.BUDGET_WATCH_LAST_SCAN,
            "When this gateway's budget watch last read every budgeted key's spend and wrote "
            "every spent mark due (unix seconds; until the first, when the watch started).",
            (),
            lambda: [((), self.last_scan)],
        )
        metrics.gauge_callback(
            sc.BUDGET_WATCH_COMPLETED_SCANS,
            "Budget scans this gateway process completed since it started (0 while none did: "
            "unlike the last-scan time, this tells a gateway that restarts before any scan).",
            (),
            lambda: [((), float(self.completed_scans))],
        )
        metrics.gauge_callback(
            sc.BUDGET_WATCH_INTERVAL,
            "How often the budget watch scans (admin.budget_watch_s).",
            (),
            lambda: [((), float(interval))],
        )

    def _on_entry(self, key: str, value: bytes | None, revision: int) -> None:
        if not key.startswith(RECORD_PREFIX):
            return
        if value is None:
            self._keys.pop(key, None)
            return
        try:
            record = KEY_DECODER.decode(value)
        except (msgspec.ValidationError, msgspec.DecodeError):
            self._keys.pop(key, None)
            log.warning("ignored an unreadable client key record")
            return
        if record.successor:  # an old secret of a rotated key: the key is counted once
            self._keys.pop(key, None)
        else:
            self._keys[key] = record

    async def start(self) -> None:
        """Returns once the keys are followed; the first scan starts at once, in the
        background (its writes of the marks must not hold the gateway's start)."""
        await self._follower.start()
        self._loops.spawn(self._scan_forever())

    async def stop(self) -> None:
        """Idempotent."""
        await self._loops.cancel_all()
        await self._follower.stop()

    async def scan(self, now: float | None = None) -> bool:
        """Count now, and mark the keys whose budget is used up (unmark the others);
        ``last_scan`` is set when every mark due was written too. Returns whether it was.

        Raises:
            redis.exceptions.RedisError, TimeoutError, OSError: Redis/Valkey could not be read
                (the previous counts stay).
        """
        moment = now or time.time()
        budgeted = [
            k for k in self._keys.values() if k.budget_usd > 0 and k.refusal(moment) is None
        ]
        read = await self._spend.period_spend(budgeted, moment)
        unknown = [key.id for key, used in zip(budgeted, read, strict=True) if used is None]
        self._warn_unreadable(unknown)
        keys = [key for key, used in zip(budgeted, read, strict=True) if used is not None]
        spent = [used for used in read if used is not None]
        self.near = count_near([k.budget_usd for k in keys], spent, sc.BUDGET_THRESHOLDS)
        self.with_budget = len(keys)
        marks = [
            spent_marks.mark_of(key, used, *periods.current(key.budget_period, moment))
            for key, used in zip(keys, spent, strict=True)
        ]
        complete = await self.marks.sync(
            [mark for mark in marks if mark is not None],
            [key.id for key, mark in zip(keys, marks, strict=True) if mark is None],
            kept=unknown,
        )
        if complete:
            self.last_scan = time.time()
            self.completed_scans += 1
        return complete

    def _warn_unreadable(self, key_ids: list[str]) -> None:
        """Warn of each key whose spend counter is not an integer, once while it stays so
        (skipped by the scans: not counted, its mark neither written nor deleted)."""
        for key_id in key_ids:
            if key_id not in self._unreadable_keys:
                log.warning(
                    "the spend counter of key %s in its current budget period is not an "
                    "integer: the key is skipped by the budget scans (not counted near its "
                    "budget, its spent mark neither written nor deleted) until it is repaired",
                    key_id,
                )
        self._unreadable_keys = set(key_ids)

    async def _scan_logged(self) -> bool:
        """Scan; a failure to read spend is logged as a warning once per outage (and when it
        ends), as every scan meanwhile fails the same way. Returns whether the scan completed
        (spend read and every mark due written)."""
        try:
            complete = await self.scan()
        except (redis.exceptions.RedisError, TimeoutError, OSError) as exc:
            if self._unreadable_since is not None:
                log.debug("still could not read spend: %s", type(exc).__name__)
                return False
            self._unreadable_since = time.monotonic()
            lapse_from, lapse_to = fail_open_after_s(self._interval)
            log.warning(
                "could not read spend (%s): until Valkey/Redis answers, keys near their budget "
                "are not counted and no spent mark is written or rewritten; heads ignore a "
                "mark %.0f minutes after its last write, so NATS callers of keys past their "
                "budget are served again (fail open) from about %.0f to %.0f minutes into "
                "the outage (logged once; switchyard_budget_watch_last_scan_timestamp_seconds "
                "stops moving)",
                type(exc).__name__,
                spent_marks.STALE_S / 60,
                lapse_from / 60,
                lapse_to / 60,
            )
            return False
        if self._unreadable_since is not None:
            log.info(
                "spend is read again after %.0f s: spent marks are kept again",
                time.monotonic() - self._unreadable_since,
            )
            self._unreadable_since = None
        return complete

    async def _scan_forever(self) -> None:
        """Scan every interval (after a scan that failed, within ``RETRY_S``: see
        :func:`next_scan_in`), whatever a scan raises: a scan that fails for a reason not
        foreseen (a NATS error) is logged (at most every ``UNEXPECTED_EVERY_S`` for each
        exception type: a second, different failure is not hidden by the first) and the next
        one runs; ending the loop would stop the marks for the life of the process. The first
        scan that completes after such a failure says so at info."""
        while True:
            completed = False
            try:
                completed = await self._scan_logged()
            except Exception as exc:
                if self._unexpected_since is None:
                    self._unexpected_since = time.monotonic()
                throttle = self._unexpected.setdefault(type(exc), Throttle(UNEXPECTED_EVERY_S))
                if throttle.ready():
                    log.exception(
                        "a budget scan failed; the next runs in %.0f s (spent marks are not "
                        "kept meanwhile: switchyard_budget_watch_last_scan_timestamp_seconds "
                        "stops moving; logged at most every %.0f minutes for each kind of error)",
                        next_scan_in(self._interval, completed=False),
                        UNEXPECTED_EVERY_S / 60,
                    )
                else:
                    log.debug("a budget scan failed again", exc_info=True)
            else:
                if completed and self._unexpected_since is not None:
                    log.info(
                        "budget scans run again after failing for %.0f s",
                        time.monotonic() - self._unexpected_since,
                    )
                    self._unexpected_since = None
            await asyncio.sleep(next_scan_in(self._interval, completed))
