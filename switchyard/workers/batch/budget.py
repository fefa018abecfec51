"""The budget of a batch's key, checked before each of its lines is sent.

The edge checks a key's budget when the batch is created; the lines go out later, past the
edge, so without this a key under its budget at creation could spend far past it through one
large batch. The key's record (its budget and period, which an admin may change while the
batch runs) is read from the ``sy_keys`` bucket by its hash, one direct get per key at most
every :data:`KEY_CACHE_S`; its spend, and the estimated cost of one request of the line's
model, from Valkey as the ``batch`` role (:class:`~switchyard.limits.budgets.BudgetCheck`).

Spend is read at most once a second per key and lands after the answers, so the runner also
counts what its own lines of the key will cost (:mod:`~switchyard.workers.batch.holds`): a
line is refused once the spend reaches the budget, and waits while the spend plus the holds of
the key's lines in flight (and finished since the read) reach it, as the edge's ADMIT does for
HTTP requests. Holds are per key across all the batches this runner runs; another runner
replica counts only its own lines.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import msgspec
import nats.errors
from nats.aio.client import Client as NATS

from switchyard.bus import subjects
from switchyard.config import Settings
from switchyard.errors import RateLimited, ServiceUnavailable
from switchyard.limits.budgets import BUDGET_CACHE_S, WARN_EVERY_S, BudgetCheck
from switchyard.runtime.shared_reads import SharedReads
from switchyard.runtime.throttle import Throttle
from switchyard.schemas.keys import KEY_DECODER, ClientKey, current_key_read, record_name
from switchyard.workers.batch.holds import Hold, KeyHolds

log = logging.getLogger("switchyard.batch")

# How long one read of a key's record answers (a raised budget applies within this).
KEY_CACHE_S = 1.0
_MAX_KNOWN = 10_000  # records kept past their cache time before a sweep
# Holds of keys whose lines ended this long ago are forgotten (past _MAX_KNOWN keys held).
_HOLDS_IDLE_S = 10.0
_DIRECT_GET = f"$JS.API.DIRECT.GET.KV_{subjects.KEYS_BUCKET}.$KV.{subjects.KEYS_BUCKET}"


class KeyRecords:
    """Client key records by hash, read with JetStream direct gets and kept briefly."""

    def __init__(
        self, nc: NATS, *, cache_s: float = KEY_CACHE_S, max_known: int = _MAX_KNOWN
    ) -> None:
        self._nc = nc
        self._records: SharedReads[ClientKey | None] = SharedReads(
            self._fetch, cache_s=cache_s, max_kept=max_known
        )
        self._warn = Throttle(WARN_EVERY_S)

    def __len__(self) -> int:
        return len(self._records)

    async def get(self, key_hash: str) -> ClientKey | None:
        """The key with this hash (its current record, when this is an old secret of a
        rotated key), or None when it no longer exists.

        Raises:
            ServiceUnavailable: the key store cannot be read right now.
        """
        record = await self._records.get(key_hash)
        if record is not None and record.successor:
            # The key was rotated since the batch was made: the batch is the key's (by id), so
            # it runs on as the key's current record says, whatever the old secret's grace.
            return await current_key_read(record, self._records.get, grace=False)
        return record

    async def _fetch(self, key_hash: str) -> ClientKey | None:
        try:
            msg = await self._nc.request(f"{_DIRECT_GET}.{record_name(key_hash)}", b"", timeout=2)
        except (nats.errors.Error, TimeoutError) as exc:
            raise self._unavailable(type(exc).__name__) from exc
        headers = msg.headers or {}
        status = headers.get("Status")
        record: ClientKey | None = None
        if status not in (None, "404"):
            raise self._unavailable(f"status {status}")
        if status is None and msg.data and headers.get("KV-Operation") not in ("DEL", "PURGE"):
            try:
                record = KEY_DECODER.decode(msg.data)
            except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
                # Not "no budget": the line waits, as for any record that cannot be read.
                raise self._unavailable("an unreadable client key record") from exc
        return record

    def _unavailable(self, why: str) -> ServiceUnavailable:
        """The error of a failed read, logged once per :data:`WARN_EVERY_S`: every batch line
        waits while records cannot be read (a missing permission looks like a timeout), and
        a runner whose lines all wait must say why."""
        if self._warn.ready():
            log.warning("cannot read client key records (%s); batch lines wait", why)
        return ServiceUnavailable("the client key store is unavailable", code="keys_unavailable")

    async def close(self) -> None:
        await self._records.close()


@dataclass(frozen=True, slots=True)
class BudgetWait:
    """A line must wait: its key's spend plus what its lines in flight hold reach the budget.
    ``why`` says so (for the log); ``changed`` returns when it may have changed."""

    why: RateLimited
    holds: KeyHolds

    async def changed(self, timeout: float) -> None:
        await self.holds.changed(min(timeout, BUDGET_CACHE_S))


# What a line is told before it is sent: refused (an error row), wait, go holding this, or go.
BudgetAnswer = RateLimited | BudgetWait | Hold | None


class BatchBudget:
    """Whether the key of a batch may still spend, asked before each line is sent."""

    def __init__(self, nc: NATS, settings: Settings) -> None:
        self.keys = KeyRecords(nc)
        self.check = BudgetCheck(settings, role="batch")
        self._holds: dict[str, KeyHolds] = {}  # by key id

    async def admit(
        self, key_hash: str, model: str = "", place: object | None = None
    ) -> BudgetAnswer:
        """What a line of the key with ``key_hash`` to ``model`` (the alias the line names)
        does now: a 429 ``budget_exceeded`` (the error an HTTP request of the key would get
        for its spend), a :class:`BudgetWait`, a :class:`Hold` to end once its attempt is
        over, or None (no budget to hold). ``place``: the line's place among the key's
        waiting lines, once it waited (an older waiting line goes first). A key that is gone,
        revoked or expired is not refused here: the head refuses the line with the error such
        a key gets everywhere.

        Raises:
            ServiceUnavailable: the key store or Valkey cannot be read (and
                ``redis.on_unavailable`` is ``fail_closed``); the line waits.
        """
        key = await self.keys.get(key_hash)
        if key is None:
            return None
        spend = await self.check.spend(key, model)
        if spend is None:
            return None
        if spend.used_up:
            return self.check.exceeded(key, spend)
        holds = self._holds.get(key.id)
        if holds is None:
            holds = self._holds[key.id] = KeyHolds()
            if len(self._holds) > _MAX_KNOWN:
                self._sweep()
        held, holders = holds.held(spend.read_at)
        if spend.spent + held >= spend.budget or holds.behind(place):
            return BudgetWait(self.check.exceeded(key, spend, held=held, holders=holders), holds)
        return holds.take(spend.estimate)

    def _sweep(self) -> None:
        before = time.monotonic() - _HOLDS_IDLE_S
        self._holds = {k: h for k, h in self._holds.items() if not h.idle_since(before)}

    async def close(self) -> None:
        await self.keys.close()
        await self.check.close()
