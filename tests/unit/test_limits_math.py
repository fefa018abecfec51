"""Limits arithmetic that needs no server: budget periods, model patterns, key refusals."""

from __future__ import annotations

import calendar
import datetime as dt

import pytest

from switchyard.limits import periods
from switchyard.limits.limiter import _duration
from switchyard.schemas.keys import ClientKey, model_allowed

pytestmark = pytest.mark.unit


def _ts(text: str) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()


def test_daily_weekly_monthly_periods_end_at_utc_boundaries() -> None:
    now = _ts("2026-11-30T13:45:00")  # a Monday
    assert periods.current("daily", now) == ("d20261130", _ts("2026-12-01T00:00:00"))
    assert periods.current("weekly", now) == ("w20261130", _ts("2026-12-07T00:00:00"))
    assert periods.current("monthly", now) == ("m202611", _ts("2026-12-01T00:00:00"))
    leap = _ts("2028-02-10T00:00:00")
    _, end = periods.current("monthly", leap)
    assert end == _ts("2028-03-01T00:00:00")
    assert calendar.isleap(2028)


def test_total_never_resets_and_numbered_periods_are_fixed_windows() -> None:
    assert periods.current("total", 123.0) == ("all", float("inf"))
    assert periods.current("60", 125.0) == ("s60-2", 180.0)
    assert periods.current("60", 180.0) == ("s60-3", 240.0)
    assert periods.valid("3600")
    assert not periods.valid("0")
    assert not periods.valid("hourly")
    # isdigit() accepted these and int() then raised ValueError (an admin 500):
    assert not periods.valid("\u00b2")  # a superscript digit
    assert not periods.valid("9" * 5000)  # more digits than int() converts
    assert periods.valid("9" * 10)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.25, "250ms"),
        (0.9996, "1s"),
        (1.5, "1.5s"),
        (59, "59s"),
        (59.97, "1m0s"),  # (read "60s" on a 429 while a success said "1m0s")
        (60, "1m0s"),
        (119.7, "2m0s"),
        (360, "6m0s"),
        (-1, "0ms"),
    ],
)
def test_reset_durations_use_openais_format(seconds: float, text: str) -> None:
    assert _duration(seconds) == text


@pytest.mark.parametrize(
    ("patterns", "model", "allowed"),
    [
        (("*",), "anything", True),
        (("gpt-4o*",), "gpt-4o-mini", True),
        (("gpt-4o*",), "gpt-4", False),
        (("demo",), "demo", True),
        (("demo",), "demo-2", False),
        ((), "demo", False),
    ],
)
def test_model_patterns(patterns: tuple[str, ...], model: str, allowed: bool) -> None:
    assert model_allowed(patterns, model) is allowed


def test_revoked_and_expired_keys_are_refused_with_their_reason() -> None:
    key = ClientKey(id="k", hash="h", name="n", expires_at=1000.0)
    assert key.refusal(now=999.0) is None
    expired = key.refusal(now=1000.0)
    assert expired is not None
    assert expired.code == "api_key_expired"
    revoked = ClientKey(id="k", hash="h", name="n", disabled=True).refusal()
    assert revoked is not None
    assert (revoked.status, revoked.code) == (401, "api_key_revoked")
