"""When a failed batch line is sent again, and when it is given up (pure logic)."""

from __future__ import annotations

from switchyard.errors import (
    ApiError,
    DeadlineExceeded,
    InvalidRequest,
    ProviderError,
    RateLimited,
    ServiceUnavailable,
)
from switchyard.workers.batch.retries import (
    FAILED_TIMES,
    NO_ROOM_WAIT_S,
    RATE_LIMITED_TIMES,
    Retries,
    passing,
)


def _failed() -> ProviderError:
    return ProviderError("down", provider="p", code="all_deployments_failed")


def test_what_may_pass_and_what_is_final() -> None:
    assert passing(_failed())
    assert passing(ApiError("overloaded", status=529))
    assert passing(ApiError("gateway timeout", status=504))
    assert passing(RateLimited("slow down"))
    assert passing(ServiceUnavailable("no room"))
    assert passing(DeadlineExceeded("late"))
    assert not passing(InvalidRequest("bad"))
    assert not passing(ApiError("not implemented", status=501))
    assert not passing(ApiError("forbidden", status=403))


def test_a_provider_failure_waits_longer_each_time_then_is_given_up() -> None:
    retries = Retries(2.0)
    waits = [retries.after(_failed()) for _ in range(FAILED_TIMES - 1)]
    assert waits == [2.0, 6.0, 18.0, 54.0]
    final = retries.after(_failed())
    assert isinstance(final, ApiError)
    assert (final.status, final.code) == (502, "all_deployments_failed")
    assert f"failed {FAILED_TIMES} times in a row" in final.message


def test_a_longer_retry_after_is_waited_up_to_the_longest_wait() -> None:
    retries = Retries(2.0)
    asked = ProviderError("down", provider="p", retry_after=30.0)
    assert retries.after(asked) == 30.0
    assert retries.after(ProviderError("down", provider="p", retry_after=86400.0)) == 300.0


def test_no_room_is_never_given_up_and_waits_at_most_five_seconds() -> None:
    retries = Retries(2.0)
    waits = [retries.after(ServiceUnavailable("no room")) for _ in range(200)]
    assert all(isinstance(w, float) for w in waits)
    assert max(w for w in waits if isinstance(w, float)) == NO_ROOM_WAIT_S


def test_a_line_rate_limited_every_time_backs_off_then_is_given_up() -> None:
    retries = Retries(2.0)
    limited = RateLimited("cooling", code="deployments_rate_limited", retry_after=10.0)
    waits = [retries.after(limited) for _ in range(RATE_LIMITED_TIMES - 1)]
    assert waits == [10.0, 10.0, 10.0, 16.0, 32.0, 64.0, 128.0, 256.0, 300.0]
    final = retries.after(limited)
    assert isinstance(final, RateLimited)
    assert (final.status, final.code) == (429, "deployments_rate_limited")
    assert "rate limited every time" in final.message
    assert final.retry_after is None
