"""``stream_timers.pushed_by``: the time a reader spent handing on what was no activity (an
SSE comment) moves an idle gap's end out, never the first token's or the stream's bound."""

from __future__ import annotations

from switchyard.workers.modelproxy.providers.stream_timers import (
    FIRST_TOKEN,
    STREAM_END,
    idle_wait,
    pushed_by,
)

IDLE = idle_wait(0.5)


def test_an_idle_gap_moves_out_by_the_time_spent() -> None:
    assert pushed_by(10.0, IDLE, 1.5, 100.0) == (11.5, IDLE)


def test_an_idle_gap_moves_no_further_than_the_streams_end() -> None:
    assert pushed_by(10.0, IDLE, 95.0, 100.0) == (100.0, STREAM_END)


def test_the_first_token_and_the_streams_end_do_not_move() -> None:
    assert pushed_by(10.0, FIRST_TOKEN, 5.0, 100.0) == (10.0, FIRST_TOKEN)
    assert pushed_by(100.0, STREAM_END, 5.0, 100.0) == (100.0, STREAM_END)


def test_no_time_spent_moves_nothing() -> None:
    assert pushed_by(10.0, IDLE, 0.0, 100.0) == (10.0, IDLE)
