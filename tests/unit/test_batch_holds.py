"""What a key's batch lines hold of its budget, and when a hold is dropped."""

from __future__ import annotations

import asyncio
import time

import pytest

from switchyard.workers.batch.holds import KeyHolds

pytestmark = pytest.mark.unit


def test_a_finished_line_holds_until_a_read_sent_after_its_cost_landed() -> None:
    holds = KeyHolds(lag_s=0.5)
    before = time.monotonic()
    a, b = holds.take(10), holds.take(7)
    assert holds.held(before) == (17, 2)
    a.end(sent=True)
    ended = time.monotonic()
    assert holds.held(ended) == (17, 2)  # a read sent as it ended may miss its cost
    assert holds.held(ended + 0.4) == (17, 2)
    assert holds.held(ended + 0.6) == (7, 1)  # this read includes it: b still runs
    b.end(sent=True)
    b.end(sent=True)  # (twice: nothing more)
    assert holds.held(ended + 0.6) == (7, 1)  # the same read again: b's cost is not in it
    assert holds.held(time.monotonic() + 1) == (0, 0)
    assert holds.running == 0


def test_a_line_that_was_not_sent_holds_nothing_once_it_ends() -> None:
    holds = KeyHolds()
    hold = holds.take(10)
    hold.end(sent=False)
    assert holds.held(float("-inf")) == (0, 0)


async def test_lines_waiting_wake_when_holds_drop_or_spend_is_read_again() -> None:
    holds = KeyHolds()
    kept = holds.take(5)
    dropped = holds.take(5)
    waiting = asyncio.ensure_future(holds.changed(30))
    await asyncio.sleep(0)
    kept.end(sent=True)  # nothing held less: no wake
    await asyncio.sleep(0)
    assert not waiting.done()
    dropped.end(sent=False)
    await asyncio.wait_for(waiting, 5)
    waiting = asyncio.ensure_future(holds.changed(30))
    await asyncio.sleep(0)
    holds.held(time.monotonic())  # a new read
    await asyncio.wait_for(waiting, 5)
    await holds.changed(0.01)  # and the wait is bounded


def test_waiting_lines_take_room_in_the_order_they_began_to_wait() -> None:
    """A fresh line whose own spend read freed room overtook lines already waiting (line 5 of
    a batch ran and line 4 was refused): a line is behind every line that waits before it."""
    holds = KeyHolds()
    assert not holds.behind(None)  # nobody waits: a line goes on its own check
    fourth = holds.queue()
    fifth = holds.queue()
    assert holds.behind(None)  # a line that never waited is behind both
    assert not holds.behind(fourth)
    assert holds.behind(fifth)
    holds.leave(fourth)  # let through (or refused): the next one's turn
    assert not holds.behind(fifth)
    assert holds.behind(None)
    assert not holds.idle_since(time.monotonic() + 1)  # a waiting line keeps its key's holds
    holds.leave(fifth)
    holds.leave(fifth)  # (twice: nothing more)
    assert not holds.behind(None)
    assert holds.idle_since(time.monotonic() + 1)
