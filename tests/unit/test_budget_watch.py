"""Counting keys near their budget (the scan itself runs on a real Valkey: test_budget_watch)."""

from __future__ import annotations

import typing

import pytest

from switchyard.admin.budget_watch import RETRY_S, count_near, fail_open_after_s, next_scan_in
from switchyard.admin.spent_writer import KEPT_SLACK_S, LONGEST_KEEP_S, kept_s, rewrite_period
from switchyard.config.settings import AdminSettings
from switchyard.limits import keys as rk
from switchyard.limits import spent_marks

pytestmark = pytest.mark.unit


def test_count_near_counts_each_threshold_reached() -> None:
    spent = [int(x * rk.NANO) for x in (0.5, 8.0, 9.99, 10.0, 12.0)]
    assert count_near([10.0] * 5, spent, (0.8, 1.0)) == {0.8: 4, 1.0: 2}
    assert count_near([], [], (0.8, 1.0)) == {0.8: 0, 1.0: 0}


def test_a_mark_kept_is_written_again_at_the_last_scan_before_ten_minutes() -> None:
    assert rewrite_period(30.0) == spent_marks.REWRITE_S
    assert rewrite_period(7.0) == 595.0  # the 85th scan; the 86th would be at 602 s
    assert rewrite_period(500.0) == 500.0  # not 1,000 s: the first scan past 600 s
    assert rewrite_period(1200.0) == 1200.0  # every scan


def test_the_longest_keep_is_the_largest_scan_interval_allowed() -> None:
    """A mark without keep_s (an older writer) is taken as kept this long: no writer, older
    or not, lets a mark it keeps get older than the largest admin.budget_watch_s."""
    meta = typing.get_type_hints(AdminSettings, include_extras=True)["budget_watch_s"]
    assert meta.__metadata__[0].le == LONGEST_KEEP_S
    assert rewrite_period(LONGEST_KEEP_S) == LONGEST_KEEP_S
    assert kept_s(0.0) == LONGEST_KEEP_S + KEPT_SLACK_S


def test_marks_lapse_from_thirty_minutes_less_the_rewrite_period() -> None:
    assert fail_open_after_s(30.0) == (1200.0, 1800.0)
    assert fail_open_after_s(500.0) == (1300.0, 1800.0)
    assert fail_open_after_s(1200.0) == (600.0, 1800.0)


def test_after_a_failed_scan_the_next_runs_within_thirty_seconds() -> None:
    """At 1,200 s one failed scan waited 1,200 s: the marks it did not rewrite lapsed at the
    heads (30 minutes) and the sweep's keep_s + 2 minutes no longer held."""
    assert next_scan_in(1200.0, completed=True) == 1200.0
    assert next_scan_in(1200.0, completed=False) == RETRY_S == 30.0
    assert next_scan_in(10.0, completed=False) == 10.0
