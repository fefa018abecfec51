"""Which lines of a cancelled batch a killed runner may have left on the bus."""

from __future__ import annotations

from switchyard.workers.batch.orphans import unanswered


def test_the_first_lines_without_a_result_up_to_the_runners_in_flight_limit() -> None:
    done = {1, 2, 4, 7}
    assert unanswered(10, done, 3) == [3, 5, 6]
    assert unanswered(10, done, 64) == [3, 5, 6, 8, 9, 10]


def test_a_batch_whose_lines_all_have_a_result_has_none_left() -> None:
    assert unanswered(3, {1, 2, 3}, 64) == []
    assert unanswered(0, set(), 64) == []
