"""A full failure table answers a new key without scanning every key each time.

With the table full, each key that aged out made room for one new key, and the next new key
scanned all of them again (10,000 keys: about 3 ms a scan, for each refill)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import ItemsView

from switchyard.admin.ui.failure_counts import FailureCounts


class _Scans(OrderedDict[str, list[float]]):
    """The table's keys, counting the scans of them all (``items()``)."""

    scans = 0

    def items(self) -> ItemsView[str, list[float]]:  # type: ignore[override]
        self.scans += 1
        return super().items()


def _full_table() -> tuple[FailureCounts, _Scans]:
    table = FailureCounts(window_s=100.0, keep=3, max_keys=3)
    for at, key in enumerate("abc"):
        assert table.failed(key, float(at)) is not None
    keys = _Scans(table._times)
    table._times = keys
    return table, keys


def test_a_refilled_table_is_not_scanned_again_for_the_next_new_key() -> None:
    table, keys = _full_table()
    assert table.failed("d", 100.5) is not None  # "a" aged out: room for one
    assert table.room_in("e", 100.7) == 100.0 + 1.0 - 100.7  # "b" ends first
    assert keys.scans == 1, keys.scans
    assert table.failed("e", 101.5) is not None  # "b" aged out by then
    assert "b" not in table


def test_a_merged_count_that_ends_sooner_is_waited_for_not_the_bound_set_before() -> None:
    """(Kept right by the new bound: another replica's older count ends before it.)"""
    table = FailureCounts(window_s=100.0, keep=3, max_keys=3)
    for at, key in ((0.0, "a"), (50.0, "b"), (60.0, "c")):
        assert table.failed(key, at) is not None
    assert table.merge("m", [20.0], 100.5) is not None  # "a" aged out; "m" ends at 120
    assert table.room_in("e", 101.0) == 120.0 - 101.0  # not 150 ("b")
    assert table.failed("e", 120.5) is not None
    assert "m" not in table
