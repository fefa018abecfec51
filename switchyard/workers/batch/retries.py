"""When a batch line that failed is sent again, and when it is given up.

Three kinds of failure make a line wait and go again (holding no sending slot meanwhile):

* no room (503: no deployment free, a provider key not stored, the budget unreadable; a
  504 whose wait no provider worked on): sent again at most :data:`NO_ROOM_WAIT_S` apart, up
  to the batch's window, as a busy platform is no fault of the line;
* a failure that may pass (a 5xx other than 503, 501 and 505: a provider's 500, the head's
  502 ``all_deployments_failed`` when no provider could be reached or answered, a 529):
  sent again after ``base``, 3 x ``base``, 9 x ``base``..., :data:`FAILED_TIMES` attempts in
  all (80 s of waits at the default 2 s), then the last failure is the line's row;
* a 429 (the provider's own limit, or every deployment cooling down after one): sent again
  after ``base``, doubling up to :data:`MAX_WAIT_FACTOR` x ``base``, or the provider's
  ``Retry-After`` when longer (up to the same bound); after :data:`RATE_LIMITED_TIMES` 429s
  (at least 13.5 minutes of waits at the default) the line is an error row saying it was
  rate limited every time, so one line a provider never takes cannot hold its batch for the
  whole window, nor cool the deployment for everyone every few seconds.

A client error (4xx other than 429) is the line's row at once. The waits never run past the
batch's window (the caller cuts them there). Every attempt carries the line's request id, so
a line that ran at the provider and lost its answer on the way is billed once however often
it is sent.
"""

from __future__ import annotations

from switchyard.errors import ApiError, DeadlineExceeded, RateLimited, ServiceUnavailable

NO_ROOM_WAIT_S = 5.0
FAILED_TIMES = 5
RATE_LIMITED_TIMES = 10
MAX_WAIT_FACTOR = 150  # the longest wait: 150 x base (5 minutes at the default 2 s)
# 5xx statuses that say the request itself cannot be served (not implemented, HTTP version).
_FINAL_5XX = frozenset({501, 505})


def passing(error: ApiError) -> bool:
    """Whether ``error`` may pass if the line is sent again later (see the module doc)."""
    if isinstance(error, RateLimited | ServiceUnavailable | DeadlineExceeded):
        return True
    return error.status >= 500 and error.status not in _FINAL_5XX


class Retries:
    """One line's failures so far, and what each next one means."""

    __slots__ = ("_base", "failed", "limited", "no_room")

    def __init__(self, base: float) -> None:
        self._base = base
        self.no_room = 0  # 503s and unworked timeouts
        self.failed = 0  # failures that may pass
        self.limited = 0  # 429s

    def after(self, error: ApiError) -> float | ApiError:
        """How long to wait before the next attempt after ``error``, or the error the line
        ends with (it has failed that way as often as it may)."""
        longest = self._base * MAX_WAIT_FACTOR
        asked = min(error.retry_after or 0.0, longest)
        if isinstance(error, RateLimited):
            self.limited += 1
            if self.limited >= RATE_LIMITED_TIMES:
                return RateLimited(
                    f"rate limited every time it was sent ({self.limited} times, waiting "
                    "longer each time); the line was given up so that it holds neither its "
                    f"batch nor the deployment. The last answer: {error.message}",
                    code=error.code,
                )
            return max(asked, min(longest, self._base * 2.0 ** (self.limited - 1)))
        if isinstance(error, ServiceUnavailable | DeadlineExceeded):
            self.no_room += 1
            return min(NO_ROOM_WAIT_S, 0.2 * self.no_room)
        self.failed += 1
        if self.failed >= FAILED_TIMES:
            return ApiError(
                f"{error.message} (failed {self.failed} times in a row, waiting longer each "
                "time; the line was given up)",
                status=error.status,
                code=error.code,
                type=error.type,
            )
        return max(asked, min(longest, self._base * 3.0 ** (self.failed - 1)))
