"""The 429 of a budget held by requests still running, and the limiter's choice of it."""

from __future__ import annotations

import pytest

from switchyard.limits.budgets import budget_exceeded
from switchyard.limits.limiter import Limiter
from switchyard.schemas.keys import ClientKey

pytestmark = pytest.mark.unit

KEY = ClientKey(id="key_x", hash="0" * 64, name="x", budget_usd=0.05, budget_period="daily")
TOTAL = ClientKey(id="key_t", hash="0" * 64, name="t", budget_usd=0.05, budget_period="total")


def test_a_held_budget_says_by_how_many_requests_and_how_much() -> None:
    err = budget_exceeded(KEY, retry_s=1.0, spent=9_000_000, held=36_000_000, holders=4)
    assert (err.status, err.code, err.type, err.retry_after) == (
        429,
        "budget_exceeded",
        "insufficient_quota",
        1.0,
    )
    assert err.message == (
        "this key's budget of $0.05 per daily period is held by 4 requests still running "
        "(spent $0.009, held ~$0.036); retry when they end"
    )


@pytest.mark.parametrize("key", [KEY, TOTAL])
def test_the_limiter_answers_holds_with_a_short_retry_and_spend_with_the_reset(
    key: ClientKey,
) -> None:
    held = Limiter._refusal(
        key, code=4, retry_ms=1000, spent=1, estimate=1, headers=[], held=10, holders=2
    )
    assert held.retry_after == 1.0  # a total budget too: the requests end soon
    assert "held by 2 requests still running" in held.message
    used_up = Limiter._refusal(
        key, code=4, retry_ms=3_600_000, spent=50_000_000, estimate=1, headers=[]
    )
    assert "is used up (spent $0.05)" in used_up.message
    if key.budget_period == "total":
        assert used_up.retry_after is None  # waiting does not help
    else:
        assert used_up.retry_after == 3600.0


def test_one_holder_and_a_period_in_seconds_read_as_english() -> None:
    seconds = ClientKey(id="key_s", hash="0" * 64, name="s", budget_usd=0.003, budget_period="10")
    held = budget_exceeded(seconds, retry_s=1.0, spent=1_000_000, held=2_000_000, holders=1)
    assert "budget of $0.003 per 10 s is held by 1 request still running" in held.message
    used_up = budget_exceeded(seconds, retry_s=4.0, spent=3_000_000)
    assert "budget of $0.003 per 10 s is used up (spent $0.003)" in used_up.message
    assert "per daily period" in budget_exceeded(KEY, retry_s=4.0, spent=1).message
    assert "$0.05 in all" in budget_exceeded(TOTAL, retry_s=None, spent=1).message
