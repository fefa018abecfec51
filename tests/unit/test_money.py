"""Money as text outside the web app: plain decimals, exact to the nano-dollar, no exponent."""

from __future__ import annotations

import pytest

from switchyard.admin.keys_cli import _card
from switchyard.limits.budgets import budget_exceeded
from switchyard.schemas.keys import ClientKey
from switchyard.schemas.money import dollars, nano_dollars


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1234567.891, "$1234567.891"),  # ":.6g" printed $1.23457e+06
        (1.44e-07, "$0.000000144"),  # ":.6g" printed $1.44e-07
        (1.5e-06, "$0.0000015"),  # ":g" printed $1.5e-06
        (1e-10, "$0.0000000001"),  # a budget typed below a nano-dollar: as given
        (1e9, "$1000000000"),
        (100.0, "$100"),
        (100, "$100"),
        (1.5, "$1.50"),
        (0.1 + 0.2, "$0.30"),  # float noise below the nano-dollar is not shown
        (0.031767, "$0.031767"),
        (0.0, "$0"),
        (-2.5, "-$2.50"),
        (1e19, "$10000000000000000000"),  # raised InvalidOperation (28-digit context)
    ],
)
def test_dollars(value: float, text: str) -> None:
    assert dollars(value) == text


@pytest.mark.parametrize(
    ("nano", "text"),
    [(144, "$0.000000144"), (1_500, "$0.0000015"), (1_234_567_891_000_000, "$1234567.891")],
)
def test_nano_dollars(nano: int, text: str) -> None:
    assert nano_dollars(nano) == text


def test_the_429_budget_message_prints_plain_decimals() -> None:
    """It read "budget of $1.5e-06 ... (spent $0.000002)": an exponent, and the spend
    rounded to the micro-dollar."""
    key = ClientKey(id="key_x", hash="0" * 64, name="x", budget_usd=1.5e-06, budget_period="total")
    used_up = budget_exceeded(key, retry_s=None, spent=1_500).message
    assert "budget of $0.0000015 in all is used up (spent $0.0000015)" in used_up
    held = budget_exceeded(key, retry_s=1.0, spent=144, held=1_356, holders=1).message
    assert "(spent $0.000000144, held ~$0.000001356)" in held


def test_keys_show_prints_plain_decimals() -> None:
    key = ClientKey(id="key_x", hash="0" * 64, name="x", budget_usd=1234567.891)
    spend = {
        "period": key.budget_period,
        "period_spend_usd": 1.44e-07,
        "period_resets_at": None,
        "total_spend_usd": 1234567.891,
    }
    card = _card(key, spend)
    assert f"budget $1234567.891 {key.budget_period}" in card
    assert f"$0.000000144 this {key.budget_period} period of $1234567.891" in card
    assert "; $1234567.891 in all" in card
    assert "e+" not in card
    assert "e-" not in card


def test_keys_show_says_a_key_past_its_budget_binds_http_only() -> None:
    """It printed "$83.439 this monthly period of $5" with no note (NATS callers once spent
    past budgets). Budgets now bind them too, so the note says only that the key is refused."""
    key = ClientKey(id="key_x", hash="0" * 64, name="x", budget_usd=5.0)
    spend = {
        "period": key.budget_period,
        "period_spend_usd": 83.439,
        "period_resets_at": None,
        "total_spend_usd": 83.439,
    }
    card = _card(key, spend)
    assert "$83.439 this monthly period of $5 [over budget: refused];" in card
    under = _card(key, {**spend, "period_spend_usd": 4.0})
    assert "over budget" not in under
    unlimited = ClientKey(id="key_y", hash="0" * 64, name="y")
    assert "over budget" not in _card(unlimited, spend)
