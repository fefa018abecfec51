"""When a deployment holds too many requests: the ``full`` mark of its scheduling record.

HOLD is bounded per tenant subject (``streams.hold_tenant_limit``, discard-new) and as a whole
(``streams.hold_max_bytes``), but JetStream cannot bound a set of subjects, so nothing bounded
one deployment's total: N tenants could hold N x the tenant limit, and one deployment's crowd
could fill the stream's bytes for every other deployment. The feeder already counts each
deployment's held requests, so it marks the record ``full`` when that count reaches
``streams.hold_total_limit`` and heads refuse new requests with 503 ``queue_full`` while it
is set (one field of a record they already follow).

Pure logic, no I/O. Two levels, each with hysteresis so the mark does not flap (each change is
one record write, and every head hears it):

* at the limit, ``default`` and ``batch`` requests are refused (``full == "default"``: that
  class and every lower one);
* interactive requests may still be held past it, by a reserve of a tenth of the limit, then
  they are refused too (``full == "interactive"``). Interactive work starts before every other
  class, so a crowd of bulk work that filled the bound would otherwise lock out exactly the
  requests priority classes protect; but any key may ask for ``interactive`` unless its
  ``max_priority`` says otherwise, so an unbounded exemption would let a client walk past the
  bound with one header.

A level clears once the count falls a tenth (at least one request) below where it was set.
"""

from __future__ import annotations

from switchyard.schemas.scheduling import NOT_FULL, FullMark


def reserve(limit: int) -> int:
    """Interactive requests held beyond ``limit`` before they are refused too."""
    return max(1, limit // 10)


def _gap(threshold: int) -> int:
    """How far below ``threshold`` the count must fall before its level clears."""
    return max(1, threshold // 10)


def full_mark(held: int, mark: FullMark, limit: int) -> FullMark:
    """The ``full`` mark a deployment's record should carry.

    Args:
        held: requests the feeder counts waiting in HOLD for the deployment (every class).
        mark: the mark the record carries now.
        limit: ``streams.hold_total_limit``.
    """
    top = limit + reserve(limit)
    if held >= top or (mark == "interactive" and held > top - _gap(top)):
        return "interactive"
    if held >= limit or (mark != NOT_FULL and held > limit - _gap(limit)):
        return "default"
    return NOT_FULL
