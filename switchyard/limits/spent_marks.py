"""Spent marks: "this key's budget was used up in this period", for callers no edge checks.

The HTTP edges and the batch runner read a key's spend counter in Valkey before they send its
work; the heads hold no Valkey connection, and a round trip per request would cost time and
add a failure mode to every request. So the gateway's budget watch, which already reads every
budgeted key's spend every ``admin.budget_watch_s``, writes one small record per key whose
budget is used up into the ``sy_key_spent`` bucket (CORE); every head follows that bucket into
memory and refuses the key's requests with the edge's 429 ``budget_exceeded``.

A mark is a fact about one period: "in period ``period_id`` of ``period``, the key had spent
``spent`` nano-dollars". Spend only grows within a period, so the fact stays true; what it
means for a request is decided against the key's record as the head holds it now
(:func:`refusal`): a mark refuses only while its period lasts (``until``), and only while the
key's budget, in the same kind of period, is at most ``spent``. Raising the budget (or
changing its period, or removing it) therefore lifts the refusal at once at every head, with
the key record's change; the watch deletes the mark at its next scan.

A mark also says when it was written (``written_at``, the gateway's clock), and the watch
writes it again at least every ``REWRITE_S`` while it stays true (every scan when its scans
are further apart), and says how old it lets it get (``keep_s``); a head ignores a mark not
written for ``STALE_S``. So a mark nobody keeps any more refuses for at most that long: one
a stopped gateway left behind, one whose key's spend went down without its budget changing
(Valkey restarted without its data, an operator lowered the counter), and one the bucket's
TTL removed (which tells no watcher: a head would otherwise hold it until it restarts). A
gateway also deletes the marks of budgeted keys it finds not spent that others wrote, once
nobody keeps them (:class:`~switchyard.admin.spent_writer.SpentWriter`).
"""

from __future__ import annotations

import time

import msgspec

from switchyard.errors import RateLimited
from switchyard.limits.budgets import budget_exceeded, budget_nano, retry_after_s
from switchyard.schemas.keys import ClientKey

# A mark still true is written again at least this often (``written_at`` anew: at the last
# scan before it passes, or every scan when scans are further apart), so a head can tell a
# mark somebody keeps from one nobody does (and the bucket's TTL, a week:
# ``runtime.definitions.KEY_SPENT_TTL_S``, removes only the latter).
REWRITE_S = 600.0
# A head ignores a mark written longer ago than this (three rewrites missed; a gateway clock
# a few minutes off either way does not matter).
STALE_S = 3 * REWRITE_S
# A head stops refusing by a mark this long before its period ends, by its own clock: a head
# whose clock is behind (by up to this much) does not refuse a key after its budget reset.
# A head whose clock is ahead lifts early, which the edges' own check covers for HTTP.
CLOCK_GRACE_S = 2.0


class SpentMark(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    key_id: str
    period: str  # the key's budget period when the mark was written
    period_id: str
    spent: int  # nano-USD spent in the period when read (at least the budget then)
    until: float | None  # unix time the period ends (None: a ``total`` budget, never)
    written_at: float = 0.0  # unix time the gateway wrote it (0: unknown, taken as stale)
    # How old its writer lets it get before writing it again while true (seconds; 0: not said,
    # a writer before this field): what another gateway's sweep waits out before deleting it.
    keep_s: float = 0.0


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(SpentMark)
READ_ERRORS = (msgspec.ValidationError, msgspec.DecodeError)


def encode(mark: SpentMark) -> bytes:
    return _ENCODER.encode(mark)


def decode(raw: bytes) -> SpentMark:
    """Raises: one of :data:`READ_ERRORS`."""
    return _DECODER.decode(raw)


def entry_name(key_id: str) -> str:
    """The mark's name in the bucket (a key id is ``key_`` and hex: a valid KV key)."""
    return key_id


def mark_of(key: ClientKey, spent: int, period_id: str, period_end: float) -> SpentMark | None:
    """The mark of ``key`` having spent ``spent`` nano-dollars in its current period, or None
    when its budget is not used up (or it has none)."""
    budget = budget_nano(key)
    if not budget or spent < budget:
        return None
    until = None if period_end == float("inf") else period_end
    return SpentMark(key.id, key.budget_period, period_id, spent, until)


def covers(mark: SpentMark, key: ClientKey, now: float) -> bool:
    """Whether ``mark`` says ``key``, as its record is now, has used up its budget."""
    if mark.key_id != key.id or mark.period != key.budget_period:
        return False
    if mark.until is not None and now >= mark.until - CLOCK_GRACE_S:  # the period reset
        return False
    if now - mark.written_at > STALE_S:  # nobody keeps it (see the module docstring)
        return False
    budget = budget_nano(key)
    return bool(budget) and budget <= mark.spent


def refusal(mark: SpentMark | None, key: ClientKey, now: float | None = None) -> RateLimited | None:
    """The 429 ``budget_exceeded`` the edge gives ``key`` when ``mark`` covers it, else None."""
    moment = time.time() if now is None else now
    if mark is None or not covers(mark, key, moment):
        return None
    end = float("inf") if mark.until is None else mark.until
    return budget_exceeded(key, retry_s=retry_after_s(end, moment), spent=mark.spent)
