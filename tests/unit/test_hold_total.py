"""The bound on one deployment's held requests: the feeder's ``full`` mark and the heads'
reading of it (``streams.hold_total_limit``)."""

from __future__ import annotations

from typing import Any, cast

import msgspec
import pytest

from switchyard.config.queue_settings import StreamSettings
from switchyard.control.holdbound import full_mark, reserve
from switchyard.schemas.scheduling import (
    SCHED_DECODER,
    SCHED_ENCODER,
    FullMark,
    SchedState,
    refuses,
)
from switchyard.workers.head.admission import STALE_S, Admission

pytestmark = pytest.mark.unit

NOW = 1_800_000_000.0


def _walk(counts: list[int], limit: int) -> list[FullMark]:
    """The mark after each count, as the feeder recomputes it; the record is written only
    when the mark changes."""
    mark: FullMark = ""
    marks = []
    for held in counts:
        mark = full_mark(held, mark, limit)
        marks.append(mark)
    return marks


def _changes(marks: list[FullMark]) -> int:
    return sum(1 for before, after in zip(["", *marks], marks, strict=False) if before != after)


def test_the_mark_is_set_when_the_count_reaches_the_limit() -> None:
    assert _walk([0, 50, 99], 100) == ["", "", ""]
    assert full_mark(100, "", 100) == "default"
    assert full_mark(105, "", 100) == "default"


def test_it_clears_only_a_tenth_below_the_limit_so_it_does_not_flap() -> None:
    assert full_mark(91, "default", 100) == "default"
    assert full_mark(90, "default", 100) == ""
    # A deployment hovering at its bound: one write up, none while it hovers, one down.
    counts = [100, 99, 100, 98, 100, 95, 99, 100, 90]
    marks = _walk(counts, 100)
    assert marks[:-1] == ["default"] * (len(counts) - 1)
    assert marks[-1] == ""
    assert _changes(marks) == 2


def test_interactive_work_has_a_reserve_of_a_tenth_above_the_limit() -> None:
    assert reserve(100) == 10
    assert full_mark(109, "default", 100) == "default"
    assert full_mark(110, "default", 100) == "interactive"
    # Down again: interactive is taken again a tenth below the top, the rest at the clear mark.
    assert full_mark(100, "interactive", 100) == "interactive"
    assert full_mark(99, "interactive", 100) == "default"
    assert full_mark(90, "interactive", 100) == ""


def test_small_limits_still_have_a_reserve_and_a_gap_of_one() -> None:
    assert reserve(1) == 1
    assert _walk([1, 0], 1) == ["default", ""]
    assert _walk([4, 5, 4, 3], 4) == ["default", "interactive", "default", ""]
    assert _walk([4, 3, 4], 4) == ["default", "", "default"]


def test_a_burst_past_the_top_is_one_write_each_way() -> None:
    marks = _walk([0, 500, 120, 0], 100)
    assert marks == ["", "interactive", "interactive", ""]
    assert _changes(marks) == 2


@pytest.mark.parametrize(
    ("mark", "refused"),
    [
        ("", set()),
        ("default", {"default", "batch"}),
        ("interactive", {"interactive", "default", "batch"}),
        ("batch", {"batch"}),
        ("bursting", set()),  # a mark from a newer feeder this head does not know: no refusal
    ],
)
def test_a_mark_refuses_its_class_and_every_lower_one(mark: str, refused: set[str]) -> None:
    assert {p for p in ("interactive", "default", "batch") if refuses(mark, p)} == refused


def test_a_request_of_an_unknown_class_counts_as_default() -> None:
    assert refuses("default", "")
    assert refuses("default", "urgent")
    assert not refuses("batch", "")


def test_records_stay_readable_both_ways_across_the_new_field() -> None:
    """A record from an older feeder reads as not full; an older head reads a new record."""
    old = b'{"held":true,"heads":2,"window_s":0.5,"at":1.0}'
    assert SCHED_DECODER.decode(old).full == ""

    class OldState(msgspec.Struct, frozen=True, kw_only=True):
        held: bool = False
        heads: int = 1
        window_s: float = 1.0
        at: float = 0.0

    new = SCHED_ENCODER.encode(SchedState(held=True, full="default", at=2.0))
    assert msgspec.json.decode(new, type=OldState) == OldState(held=True, at=2.0)
    odd = SCHED_DECODER.decode(b'{"held":true,"full":"bursting"}')  # never drops the record
    assert odd.held
    assert odd.full == "bursting"


def _admission(full: str, written_at: float = NOW) -> Admission:
    admission = Admission(cast(Any, None))  # the KV follower is never started here
    record = SchedState(held=True, heads=1, window_s=0.1, at=written_at, full=full)
    admission._on_entry("dep.d", SCHED_ENCODER.encode(record), 1)
    return admission


def test_the_head_refuses_to_hold_what_the_record_marks_full() -> None:
    admission = _admission("default")
    assert admission.full("d", "default", NOW)
    assert admission.full("d", "batch", NOW)
    assert not admission.full("d", "interactive", NOW)
    assert not admission.full("other", "default", NOW)  # no record: nothing refused
    assert _admission("interactive").full("d", "interactive", NOW)
    assert not _admission("").full("d", "batch", NOW)


def test_a_record_no_feeder_speaks_for_refuses_nothing() -> None:
    """Without a feeder nothing moves held requests, heads dispatch first come first served,
    and a stale ``full`` mark must not keep refusing."""
    admission = _admission("interactive", written_at=NOW - STALE_S - 1)
    assert not admission.full("d", "batch", NOW)


def test_the_default_bound_is_ten_tenants_worth() -> None:
    streams = StreamSettings()
    assert streams.hold_total_limit == 10 * streams.hold_tenant_limit
