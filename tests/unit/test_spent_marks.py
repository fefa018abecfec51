"""Spent marks: which requests a head refuses by them (pure logic; the stack test is
``tests/test_nats_budget.py``)."""

from __future__ import annotations

import msgspec

from switchyard.limits import keys as rk
from switchyard.limits import spent_marks
from switchyard.schemas.keys import ClientKey

NOW = 1_800_000_000.0
END = NOW + 3600


def _key(**fields: object) -> ClientKey:
    return msgspec.structs.replace(
        ClientKey(id="key_0123456789abcdef", hash="h", name="n", budget_usd=5.0),
        **fields,
    )


def _mark(key: ClientKey, spent_usd: float = 5.0, until: float = END) -> spent_marks.SpentMark:
    mark = spent_marks.mark_of(key, int(spent_usd * rk.NANO), "d20270115", until)
    assert mark is not None
    return msgspec.structs.replace(mark, written_at=NOW - 60)  # as the writer stamps it


def test_no_mark_for_a_key_with_budget_left_or_none() -> None:
    assert spent_marks.mark_of(_key(), int(4.99 * rk.NANO), "p", END) is None
    assert spent_marks.mark_of(_key(budget_usd=0.0), 10**12, "p", END) is None


def test_a_mark_refuses_as_the_edge_does_until_the_period_ends() -> None:
    key = _key()
    refused = spent_marks.refusal(_mark(key), key, NOW)
    assert refused is not None
    assert (refused.status, refused.code, refused.type) == (
        429,
        "budget_exceeded",
        "insufficient_quota",
    )
    assert refused.retry_after == 3600
    assert spent_marks.refusal(_mark(key), key, END) is None  # the period reset


def test_a_head_lifts_a_mark_a_little_before_its_period_ends() -> None:
    """A head whose clock is behind by up to ``CLOCK_GRACE_S`` does not refuse a key whose
    budget already reset (by the gateway's clock, the edges')."""
    key = _key()
    assert spent_marks.CLOCK_GRACE_S == 2.0
    mark = msgspec.structs.replace(_mark(key), written_at=END - 60)
    assert spent_marks.refusal(mark, key, END - 2.5) is not None
    assert spent_marks.refusal(mark, key, END - 1.0) is None


def test_a_raised_budget_or_another_period_lifts_it_and_a_lowered_one_does_not() -> None:
    key = _key()
    mark = _mark(key, spent_usd=5.5)
    assert spent_marks.refusal(mark, _key(budget_usd=6.0), NOW) is None
    assert spent_marks.refusal(mark, _key(budget_usd=0.0), NOW) is None  # no budget now
    assert spent_marks.refusal(mark, _key(budget_period="weekly"), NOW) is None
    assert spent_marks.refusal(mark, _key(budget_usd=5.5), NOW) is not None
    assert spent_marks.refusal(mark, _key(budget_usd=1.0), NOW) is not None
    assert spent_marks.refusal(mark, _key(id="key_fedcba9876543210"), NOW) is None


def test_a_total_budget_never_resets_and_its_mark_round_trips() -> None:
    key = _key(budget_period="total")
    mark = _mark(key, until=float("inf"))
    assert mark.until is None
    assert spent_marks.decode(spent_marks.encode(mark)) == mark
    later = NOW + 10**8  # years on, the mark kept (rewritten) all along
    refused = spent_marks.refusal(msgspec.structs.replace(mark, written_at=later - 60), key, later)
    assert refused is not None
    assert refused.retry_after is None


def test_a_mark_nobody_rewrote_for_stale_s_refuses_nothing() -> None:
    """A mark the gateway no longer keeps (written before a restart, spend gone down, removed
    by the bucket's TTL without a watch event) stops refusing once it is STALE_S old."""
    key = _key()
    assert spent_marks.STALE_S >= 3 * spent_marks.REWRITE_S
    fresh = msgspec.structs.replace(_mark(key), written_at=NOW - spent_marks.STALE_S + 1)
    assert spent_marks.refusal(fresh, key, NOW) is not None
    stale = msgspec.structs.replace(_mark(key), written_at=NOW - spent_marks.STALE_S - 1)
    assert spent_marks.refusal(stale, key, NOW) is None
    unstamped = msgspec.structs.replace(_mark(key), written_at=0.0)
    assert spent_marks.refusal(unstamped, key, NOW) is None
