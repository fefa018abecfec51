"""Right admin tokens at the sign-in: at most so many a minute per (address, role) and per role (a
read-only token holder signing in a thousand times a second evicted admins' sessions and
pushed every real entry out of the audit log)."""

from __future__ import annotations

import pytest

from switchyard.admin.token import Role
from switchyard.admin.ui.signin_rate import SigninRate

pytestmark = pytest.mark.unit

T0 = 1_780_000_000.0


def test_an_address_past_its_minutes_sign_ins_waits_for_the_oldest_to_age_out() -> None:
    rate = SigninRate(per_address=3, per_role=100)
    assert [rate.take("203.0.113.9", Role.READ_ONLY, T0 + i) for i in range(3)] == [0.0] * 3
    assert rate.take("203.0.113.9", Role.READ_ONLY, T0 + 10) == pytest.approx(50.0)
    assert rate.take("203.0.113.10", Role.READ_ONLY, T0 + 10) == 0.0  # another address
    assert rate.take("203.0.113.9", Role.READ_ONLY, T0 + 60) == 0.0  # the first aged out


def test_read_only_sign_ins_from_an_address_never_make_its_admin_wait() -> None:
    """One NAT, or a gateway seeing only its reverse proxy: the read-only token's holders
    signing in from the admin's address used up the address's count, and the admin waited."""
    rate = SigninRate(per_address=3, per_role=100)
    assert [rate.take("203.0.113.9", Role.READ_ONLY, T0 + i) for i in range(3)] == [0.0] * 3
    assert rate.take("203.0.113.9", Role.READ_ONLY, T0 + 10) > 0
    assert [rate.take("203.0.113.9", Role.ADMIN, T0 + 10 + i) for i in range(3)] == [0.0] * 3
    assert rate.take("203.0.113.9", Role.ADMIN, T0 + 20) > 0  # the admin's own bound


def test_the_defaults_leave_a_team_behind_one_address_alone_and_bound_each_role() -> None:
    rate = SigninRate()
    assert all(rate.take("192.0.2.1", Role.ADMIN, T0 + i) == 0.0 for i in range(60))
    assert all(rate.take("192.0.2.1", Role.READ_ONLY, T0 + i) == 0.0 for i in range(60))
    assert rate.take("192.0.2.1", Role.READ_ONLY, T0 + 59.5) > 0
    taken = [rate.take(f"198.51.100.{i}", Role.READ_ONLY, T0 + 59.5) for i in range(100)]
    assert taken.count(0.0) == 60  # 120 a minute with one role from all addresses together


def test_an_ipv6_client_counts_by_its_64() -> None:
    rate = SigninRate(per_address=2, per_role=100)
    assert rate.take("2001:db8::1", Role.READ_ONLY, T0) == 0.0
    assert rate.take("2001:db8::2", Role.READ_ONLY, T0) == 0.0
    assert rate.take("2001:db8::3", Role.READ_ONLY, T0) > 0


def test_a_role_is_bounded_over_every_address_and_the_other_role_is_not() -> None:
    """Fresh addresses (an IPv6 /48 has 65,536 /64s) must not lift the bound on entries."""
    rate = SigninRate(per_address=100, per_role=5)
    taken = [rate.take(f"2001:db8:0:{i:x}::1", Role.READ_ONLY, T0) for i in range(8)]
    assert taken[:5] == [0.0] * 5
    assert all(w == pytest.approx(60.0) for w in taken[5:])
    assert rate.take("198.51.100.1", Role.ADMIN, T0) == 0.0  # an admin still signs in


def test_refused_sign_ins_add_no_address_and_idle_ones_are_forgotten() -> None:
    rate = SigninRate(per_address=100, per_role=2)
    for i in range(1000):
        rate.take(f"10.0.{i // 256}.{i % 256}", Role.READ_ONLY, T0)
    assert rate.followed() == 2
    rate.take("10.0.0.0", Role.ADMIN, T0)  # the same address with the other role: its own
    assert rate.followed() == 3
    rate.take("10.9.9.9", Role.ADMIN, T0 + 61)
    assert rate.followed() == 1
