"""The feeder's 504 for a held request past its deadline: a failed publish is tried again.

A publish that failed (the connection down for a moment) was logged and the caller heard
nothing; now each publish of the answer (the error, then the terminator) is tried three times,
with a growing pause, and the error is never sent twice.
"""

from __future__ import annotations

import time

import pytest
from nats.errors import ConnectionClosedError, OutboundBufferLimitError

from switchyard.control import heldexpiry
from switchyard.control.heldexpiry import RETRY_S, TRIES, retried

pytestmark = pytest.mark.unit


async def test_a_publish_that_fails_twice_goes_through_the_third_time() -> None:
    tries: list[float] = []

    async def send() -> None:
        tries.append(time.monotonic())
        if len(tries) < 3:
            raise ConnectionClosedError  # (the connection is down for a moment)

    assert await retried(send)
    assert len(tries) == 3 == TRIES
    assert tries[1] - tries[0] >= RETRY_S * 0.9
    assert tries[2] - tries[1] >= 2 * RETRY_S * 0.9  # (a growing pause)


async def test_a_publish_that_keeps_failing_is_given_up_after_its_tries() -> None:
    tries: list[float] = []

    async def send() -> None:
        tries.append(time.monotonic())
        raise OutboundBufferLimitError  # (reconnecting, its buffer full)

    assert not await retried(send)
    assert len(tries) == TRIES


async def test_a_publish_that_goes_through_is_sent_once() -> None:
    sent: list[int] = []

    async def send() -> None:
        sent.append(1)

    assert await retried(send)
    assert sent == [1]
    assert heldexpiry.TRIES >= 2  # (the bound the docs give: a few tries, not one)
