"""The head's reading of ``sy_sched``: which saturation records still speak for a feeder.

Records are written only when they change; the feeder's lease, renewed every 2 s, is its
heartbeat. Pure logic: entries are handed to the follower's callback as the KV watch would.
"""

from __future__ import annotations

from typing import Any, cast

from switchyard.schemas.scheduling import (
    FEEDER_LEASE_KEY,
    LEASE_ENCODER,
    SCHED_ENCODER,
    FeederLease,
    SchedState,
)
from switchyard.workers.head.admission import LEASE_GRACE_S, STALE_S, Admission, feeder_running

NOW = 1_800_000_000.0


def _admission(*, held: bool, written_at: float, lease_until: float | None) -> Admission:
    admission = Admission(cast(Any, None))  # the KV follower is never started here
    record = SchedState(held=held, heads=2, window_s=0.1, at=written_at)
    admission._on_entry("dep.d", SCHED_ENCODER.encode(record), 1)
    if lease_until is not None:
        lease = FeederLease(owner="control-1", until=lease_until)
        admission._on_entry(FEEDER_LEASE_KEY, LEASE_ENCODER.encode(lease), 2)
    return admission


def test_an_old_record_counts_while_the_feeder_holds_its_lease() -> None:
    admission = _admission(held=True, written_at=NOW - 600, lease_until=NOW + 4)
    assert admission.held("d", NOW)
    assert not admission.direct("d", 4, NOW)


def test_records_lapse_once_the_lease_has_lapsed_past_the_grace() -> None:
    admission = _admission(held=True, written_at=NOW - 600, lease_until=NOW - LEASE_GRACE_S - 1)
    assert not admission.held("d", NOW)
    assert admission.direct("d", 4, NOW)  # no feeder: first come, first served


def test_a_released_lease_keeps_its_last_expiry() -> None:
    """A clean stop deletes the lease; heads keep holding until it would have lapsed, so a
    restart or handover within the grace does not let new requests jump HOLD's queue."""
    admission = _admission(held=True, written_at=NOW - 600, lease_until=NOW + 2)
    admission._on_entry(FEEDER_LEASE_KEY, None, 3)
    assert admission.held("d", NOW + 2 + LEASE_GRACE_S)
    assert not admission.held("d", NOW + 3 + LEASE_GRACE_S)


def test_without_a_lease_a_record_speaks_for_itself_while_recent() -> None:
    admission = _admission(held=True, written_at=NOW - 3, lease_until=None)
    assert admission.held("d", NOW)
    assert not admission.held("d", NOW - 3 + STALE_S + 0.5)


def test_a_garbled_lease_changes_nothing() -> None:
    admission = _admission(held=True, written_at=NOW - 600, lease_until=NOW + 4)
    admission._on_entry(FEEDER_LEASE_KEY, b"{not json", 3)
    assert admission.held("d", NOW)


def test_feeder_running_rule() -> None:
    assert feeder_running(record_at=0.0, lease_until=NOW, now=NOW + LEASE_GRACE_S)
    assert not feeder_running(record_at=0.0, lease_until=NOW, now=NOW + LEASE_GRACE_S + 0.1)
    assert feeder_running(record_at=NOW, lease_until=0.0, now=NOW + STALE_S)
    assert not feeder_running(record_at=NOW, lease_until=0.0, now=NOW + STALE_S + 0.1)
