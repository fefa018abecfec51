"""The sign-in guard's limits are hard bounds: an address block is counted as a whole, and
no count is forgotten before its window ends, whatever else fails meanwhile."""

from __future__ import annotations

import pytest

from switchyard.admin.ui import signin_guard
from switchyard.admin.ui.signin_guard import SigninGuard


def _try(guard: SigninGuard, source: str, now: float) -> bool:
    """One wrong token as the sign-in handles it: counted unless the guard says wait."""
    if guard.wait_s(source, now=now):
        return False
    guard.failed(source, now=now)
    return True


def test_an_ipv6_48_spread_over_its_64s_gets_a_bound_all_together() -> None:
    """Each /64 got LIMIT wrong tokens a window: a /48 (65,536 /64s) got 655,360."""
    guard = SigninGuard(limit=10, window_s=300)
    counted = sum(_try(guard, f"2001:db8:1:{net:x}::1", now=1.0) for net in range(200))
    assert counted == 30  # 3 x LIMIT for the /48
    assert guard.wait_s("2001:db8:1:ffff::1", now=2.0) > 0
    assert guard.wait_s("2001:db8:2::1", now=2.0) == 0  # another /48
    assert guard.wait_s("2001:db8:1:ffff::1", now=301.5) == 0  # the window is over


def test_an_ipv4_24_gets_a_bound_all_together() -> None:
    guard = SigninGuard(limit=10, window_s=300)
    counted = sum(_try(guard, f"198.51.100.{host}", now=1.0) for host in range(1, 255))
    assert counted == 30
    assert guard.wait_s("198.51.100.254", now=2.0) > 0
    assert guard.wait_s("198.51.101.1", now=2.0) == 0


def test_wrong_tokens_from_other_addresses_do_not_evict_a_blocked_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past MAX_ADDRESSES the least recently failing address was forgotten: wrong tokens
    from enough others (each from a /48 of its own here) wiped a blocked address's count,
    and it got LIMIT more."""
    monkeypatch.setattr(signin_guard, "MAX_ADDRESSES", 50)
    guard = SigninGuard(limit=10, window_s=300)
    blocked = "2001:db8:1:1::1"
    for _ in range(10):
        assert _try(guard, blocked, now=1.0)
    assert guard.wait_s(blocked, now=2.0) > 0
    for net in range(100):  # twice as many addresses as are kept
        _try(guard, f"2001:db8:{net + 2:x}::1", now=2.0)
    assert guard.wait_s(blocked, now=3.0) > 0
    assert not _try(guard, blocked, now=3.0)
    assert len(guard._failures) <= 50
    assert len(guard._areas) <= 50
    # A new address while every count is live: not counted, so refused until one ages out.
    assert guard.wait_s("203.0.113.1", now=3.0) > 0
    assert guard.wait_s("203.0.113.1", now=302.5) == 0
    assert _try(guard, "203.0.113.1", now=302.5)


def test_a_full_table_is_logged_once_a_window(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A full table refused every new address's wrong tokens without a word in the log (a
    block was logged once): an operator saw 429s and nothing to say why."""
    monkeypatch.setattr(signin_guard, "MAX_ADDRESSES", 5)
    guard = SigninGuard(limit=10, window_s=300)
    for net in range(5):
        assert _try(guard, f"2001:db8:{net + 1:x}::1", now=1.0)
    caplog.set_level("WARNING", logger="switchyard.admin.ui")
    for host in range(1, 20):  # refused: not counted (the web sign-in then skips it)
        source = f"203.0.113.{host}"
        assert not _try(guard, source, now=2.0 + host)
        guard.skip(source, now=2.0 + host)
    full = [r for r in caplog.records if "its most" in r.getMessage()]
    assert len(full) == 1, [r.getMessage() for r in caplog.records]
    assert "203.0.113" not in full[0].getMessage()
    assert not _try(guard, "203.0.113.1", now=250.0)  # the same window: no second line
    assert len([r for r in caplog.records if "its most" in r.getMessage()]) == 1
    assert _try(guard, "203.0.113.1", now=302.0)  # the counts aged out: room again
