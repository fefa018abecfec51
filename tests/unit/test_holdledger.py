"""The feeder's purge bookkeeping: what may leave HOLD, and when a batch is full."""

from __future__ import annotations

from switchyard.control.holdledger import HoldLedger, Purge

A = "llm.v1.hold.dep1.default.team-a"
B = "llm.v1.hold.dep1.default.team-b"


def test_purges_everything_below_the_oldest_request_still_waiting() -> None:
    ledger = HoldLedger(batch=64)
    for seq in (1, 2, 3, 4):
        ledger.read(A, "dep1", seq)
    ledger.finish(A, "dep1", 1)
    ledger.finish(A, "dep1", 2)
    assert ledger.due() == [Purge(A, "dep1", 3, (1, 2))]
    assert not ledger.pending()
    assert ledger.due() == []  # nothing finished since


def test_a_failed_move_holds_the_bound_until_it_moves() -> None:
    ledger = HoldLedger(batch=64)
    for seq in (10, 11, 12):
        ledger.read(A, "dep1", seq)
    ledger.finish(A, "dep1", 11)  # 10's move failed: it is waiting again, in front
    assert ledger.due() == []
    assert ledger.pending()  # 11 waits for 10
    ledger.finish(A, "dep1", 10)
    assert ledger.due() == [Purge(A, "dep1", 12, (11, 10))]


def test_a_subject_with_nothing_waiting_is_purged_to_its_last_and_forgotten() -> None:
    ledger = HoldLedger(batch=64)
    ledger.read(A, "dep1", 5)
    ledger.read(B, "dep1", 6)
    ledger.finish(A, "dep1", 5)
    assert ledger.due() == [Purge(A, "dep1", 6, (5,))]
    assert len(ledger) == 2
    ledger.due()
    assert len(ledger) == 1  # A is done; B still has a request waiting


def test_a_full_batch_asks_for_a_purge_now() -> None:
    ledger = HoldLedger(batch=3)
    for seq in range(1, 8):
        ledger.read(A, "dep1", seq)
    assert [ledger.finish(A, "dep1", seq) for seq in (1, 2, 3)] == [False, False, True]
    assert ledger.due() == [Purge(A, "dep1", 4, (1, 2, 3))]
    assert ledger.finish(A, "dep1", 4) is False  # the count starts again after a purge


def test_a_refused_purge_is_retried_with_the_next() -> None:
    ledger = HoldLedger(batch=64)
    for seq in (1, 2, 3):
        ledger.read(A, "dep1", seq)
    ledger.finish(A, "dep1", 1)
    (purge,) = ledger.due()
    ledger.failed(purge)
    ledger.finish(A, "dep1", 2)
    assert ledger.due() == [Purge(A, "dep1", 3, (1, 2))]


def test_behind_counts_the_finished_requests_a_waiting_one_keeps_in_hold() -> None:
    ledger = HoldLedger(batch=64)
    for seq in (1, 2, 3, 4):
        ledger.read(A, "d", seq)
    ledger.read(B, "d", 5)
    for seq in (1, 3, 4, 5):
        ledger.finish(A if seq != 5 else B, "d", seq)
    assert ledger.behind(A, 2) == 2  # 3 and 4: not purged while 2 waits
    assert ledger.behind(A, 4) == 0
    assert ledger.behind("llm.v1.hold.dep1.default.team-c", 1) == 0  # (unknown subject)
