"""Wrong admin tokens on /admin/v1: which refusals get an audit entry when (one entry a minute
per address, saying how many since the last; a bound on entries an hour, all addresses)."""

from __future__ import annotations

from switchyard.admin.token_audit import MANY, RefusalCounts, Refusals, refusal_detail
from switchyard.admin.ui.signin_guard import counted_as

T0 = 1_780_000_000.0


def test_the_first_refusal_is_written_and_the_minutes_rest_are_said_in_one_entry() -> None:
    counts = RefusalCounts(counted_as=counted_as)
    assert counts.refused("203.0.113.9", T0) == Refusals("203.0.113.9", 1, T0)
    assert [counts.refused("203.0.113.9", T0 + i) for i in range(1, 5)] == [None] * 4
    assert counts.due(T0 + 59) == []
    assert counts.next_due(T0 + 59) == 1.0
    assert counts.due(T0 + 60) == [Refusals("203.0.113.9", 4, T0 + 1)]
    assert counts.next_due(T0 + 60) is None  # nothing counted: no task needs to wait
    # A minute after that entry, the next refusal is written at once again.
    assert counts.refused("203.0.113.9", T0 + 121) == Refusals("203.0.113.9", 1, T0 + 121)


def test_an_ipv6_client_counts_by_its_64_and_the_entry_names_its_newest_source() -> None:
    counts = RefusalCounts(counted_as=counted_as)
    assert counts.refused("2001:db8::1", T0) is not None
    assert counts.refused("2001:db8::2 via 10.0.0.7", T0 + 1) is None
    assert counts.due(T0 + 60) == [Refusals("2001:db8::2 via 10.0.0.7", 1, T0 + 1)]


def test_entries_an_hour_are_bounded_and_the_rest_waits_merged_not_lost() -> None:
    counts = RefusalCounts(per_hour=3, counted_as=counted_as)
    written = [counts.refused(f"198.51.100.{i}", T0) for i in range(5)]
    assert [w.count if w else None for w in written] == [1, 1, 1, None, None]
    assert counts.due(T0 + 600) == []  # the hour's three are spent
    assert counts.next_due(T0 + 600) == 3000.0
    later = counts.due(T0 + 3600)
    assert sorted(w.source for w in later) == ["198.51.100.3", "198.51.100.4"]


def test_addresses_past_the_bound_are_said_together() -> None:
    counts = RefusalCounts(max_addresses=2, per_hour=2, counted_as=counted_as)
    for i in range(2):
        assert counts.refused(f"192.0.2.{i}", T0) is not None
    for i in range(2, 6):  # the hour's allowance is spent: counted, not written
        assert counts.refused(f"192.0.2.{i}", T0 + i) is None
    said = counts.due(T0 + 3600)  # the next hour's two: the forgotten ones first
    assert said == [Refusals(MANY, 2, T0 + 2), Refusals("192.0.2.4", 1, T0 + 4)]
    assert counts.due(T0 + 7200) == [Refusals("192.0.2.5", 1, T0 + 5)]


def test_the_words_say_how_many_since_when_and_never_the_token() -> None:
    assert refusal_detail(Refusals("203.0.113.9", 1, T0)) == "wrong admin token"
    assert refusal_detail(Refusals("203.0.113.9", 1234, T0)) == (
        "1,234 wrong admin tokens since 2026-05-28 20:26:40 UTC (one entry a minute per address)"
    )
