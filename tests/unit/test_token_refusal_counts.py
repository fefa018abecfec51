"""Wrong admin tokens on /admin/v1: which refusals get an audit entry when (one entry a minute
per address, saying how many since the last; a bound on entries an hour, all addresses)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import pytest

from switchyard.admin.token_audit import (
    MANY,
    STOPPED,
    TOP,
    RefusalAudit,
    RefusalCounts,
    Refusals,
    refusal_detail,
)
from switchyard.admin.ui.signin_guard import counted_as
from switchyard.bus.audit import AuditWriter

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
    forgotten = (("192.0.2.2", 1), ("192.0.2.3", 1))  # named: the most refused of them
    assert said == [Refusals(MANY, 2, T0 + 2, forgotten), Refusals("192.0.2.4", 1, T0 + 4)]
    assert counts.due(T0 + 7200) == [Refusals("192.0.2.5", 1, T0 + 5)]


def test_a_guesser_pushed_out_by_fresh_addresses_is_still_named() -> None:
    """The hour's entries spent from throwaway addresses, then guesses from X (counted, not
    written), then one refusal from each of more fresh IPv6 /64s than are followed: X was
    merged into the forgotten addresses' entry and never named."""
    counts = RefusalCounts(max_addresses=100, per_hour=3, counted_as=counted_as)
    for i in range(3):
        assert counts.refused(f"192.0.2.{i}", T0) is not None
    guesser = "203.0.113.66"
    for i in range(40):
        assert counts.refused(guesser, T0 + 1 + i / 100) is None
    for i in range(300):
        assert counts.refused(f"2001:db8:0:{i:x}::1", T0 + 2) is None
    said = counts.due(T0 + 3600)
    merged = said[0]
    assert merged.source == MANY
    assert merged.count == 40 + 200  # X's and the fresh ones' past the 100 followed
    assert merged.top[0] == (guesser, 40)
    assert len(merged.top) <= TOP
    assert f"the most from {guesser} (40)" in refusal_detail(merged)


def test_the_words_say_how_many_since_when_and_never_the_token() -> None:
    assert refusal_detail(Refusals("203.0.113.9", 1, T0)) == "wrong admin token"
    assert refusal_detail(Refusals("203.0.113.9", 1234, T0)) == (
        "1,234 wrong admin tokens since 2026-05-28 20:26:40 UTC (one entry a minute per address)"
    )


class _ScanCounting(RefusalCounts):
    """Counts the walks of the whole table (:meth:`RefusalCounts.next_due` is one)."""

    scans = 0

    def next_due(self, now: float) -> float | None:
        self.scans += 1
        return super().next_due(now)


class _Entries:
    """Where :class:`RefusalAudit` writes its entries (the audit stream in the gateway)."""

    def __init__(self) -> None:
        self.written: list[tuple[str, str | None]] = []

    async def record(self, actor: str, action: str, target: str, detail: str, **kw: Any) -> bool:
        self.written.append((detail, kw.get("source")))
        return True


class _Refusing(_Entries):
    """An audit stream that stores nothing (NATS away): ``record`` says so."""

    async def record(self, actor: str, action: str, target: str, detail: str, **kw: Any) -> bool:
        return False


def test_a_stop_that_cannot_write_counts_every_refusal_it_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A write that failed was counted as written: the stop's error line left out the first
    (and largest, merged) entry's count."""
    counts = RefusalCounts(per_hour=10, counted_as=counted_as)
    for i in range(2):
        assert counts.refused(f"198.51.100.{i}", T0) is not None
        for n in range(3):
            assert counts.refused(f"198.51.100.{i}", T0 + 1 + n) is None  # 3 each, waiting

    async def stop() -> None:
        await RefusalAudit(cast("AuditWriter", _Refusing()), counts).stop(within=1.0)

    with caplog.at_level(logging.ERROR, logger="switchyard.admin"):
        asyncio.run(stop())
    assert "6 wrong admin tokens not written" in caplog.text


def test_a_refused_call_does_not_walk_every_followed_address() -> None:
    """Each 401/429 walked the whole table (up to 10,000 addresses: ~10 ms a call) to learn
    whether the flush task was needed; now only the task walks it, once per wait."""
    counts = _ScanCounting(per_hour=10_000, counted_as=counted_as)
    entries = _Entries()

    async def flood() -> None:
        audit = RefusalAudit(cast("AuditWriter", entries), counts)
        for i in range(2_000):
            await audit.refused(f"2001:db8:0:{i:x}::1")  # each once: written at once
            await audit.refused(f"2001:db8:0:{i:x}::2")  # then counted, due in a minute
        await asyncio.sleep(0)  # the flush task starts and scans once to learn its wait
        await audit.stop()

    asyncio.run(flood())
    # 2,000 at once; the other 2,000, counted for the minute, are said at the stop.
    assert len(entries.written) == 4_000
    assert counts.scans <= 2, counts.scans  # it was one a call: 4,000


def test_idle_addresses_are_forgotten_without_a_flush() -> None:
    """Only due() forgot an address, and it runs only while something waits: a table of
    idle addresses stayed full (10,000), each a scan's step on every refusal."""
    counts = RefusalCounts(per_hour=10_000, counted_as=counted_as)
    for i in range(500):
        assert counts.refused(f"198.51.{i // 256}.{i % 256}", T0) is not None
    assert counts.followed() == 500
    assert not counts.waiting()
    assert counts.refused("203.0.113.1", T0 + 30) is not None
    assert counts.followed() == 501  # within the minute an address must be kept
    assert counts.refused("203.0.113.2", T0 + 61) is not None
    assert counts.followed() == 2  # the 500 are free to be written again: forgotten
    assert counts.refused("198.51.0.0", T0 + 62) == Refusals("198.51.0.0", 1, T0 + 62)


def test_a_stop_says_every_count_at_once_and_at_most_one_entry_past_the_hours_allowance() -> None:
    """The counts live in memory: a gateway stopped within an address's minute lost its
    refusals (and an hour's worth past the allowance) without a word."""
    counts = RefusalCounts(per_hour=4, counted_as=counted_as)
    for i in range(3):
        assert counts.refused(f"198.51.100.{i}", T0) is not None  # written at once: 3 of 4
        assert counts.refused(f"198.51.100.{i}", T0 + 1 + i) is None  # counted for later
        assert counts.refused(f"198.51.100.{i}", T0 + 2 + i) is None
    assert counts.flush(T0 + 10) == [
        Refusals("198.51.100.0", 2, T0 + 1),  # the hour's last entry of its own
        Refusals(STOPPED, 4, T0 + 2, (("198.51.100.1", 2), ("198.51.100.2", 2))),
    ]
    assert not counts.waiting()
    assert counts.flush(T0 + 11) == []  # said once
    assert counts.next_due(T0 + 11) is None
