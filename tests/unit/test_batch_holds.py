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
