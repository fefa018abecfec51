"""Retry-After of the head's refusals: sized by the queue, jittered, and a valid HTTP value.

Pure logic: the estimate (``queue_room``), the HTTP rendering (``bus.headers`` and the edges'
error responses) and which deployment an error answer names (``decide.Named``).
"""

from __future__ import annotations

import math
import random

import pytest

from switchyard.bus.envelope import Envelope
from switchyard.bus.headers import http_retry_after
from switchyard.errors import RateLimited, ServiceUnavailable
from switchyard.runtime.http import error_response
from switchyard.workers.head import queue_room
from switchyard.workers.head.decide import Named


@pytest.mark.parametrize(
    ("seconds", "header"),
    [
        (0.0, "1"),
        (0.3, "1"),
        (1.0, "1"),
        (1.2, "2"),
        (2.5, "3"),
        (29.01, "30"),
        (math.inf, "86400"),
    ],
)
def test_the_http_value_is_whole_seconds_rounded_up(seconds: float, header: str) -> None:
    """RFC 9110: delay-seconds is a non-negative integer. 1.2 used to read "1" (rounded to
    nearest: the client came back before the time it was given) and 2.5 "2"."""
    assert http_retry_after(seconds) == header


def test_an_error_response_carries_the_rounded_up_value() -> None:
    response = error_response(ServiceUnavailable("busy", code="queue_full", retry_after=1.2))
    assert response.headers["retry-after"] == "2"
    cooling = error_response(RateLimited("limited", retry_after=0.3))  # decide's smallest
    assert cooling.headers["retry-after"] == "1"


def _draws(depth: int, concurrency: int, pace: float, n: int = 400) -> list[float]:
    rng = random.Random(7)
    return [queue_room.retry_after(depth, concurrency, pace, rng) for _ in range(n)]


def test_a_full_queue_is_given_the_second_half_of_its_drain_time() -> None:
    # 20 requests, 2 at a time, 1.5 s each: 15 s to serve them all.
    draws = _draws(20, 2, 1.5)
    assert set(draws) == set(map(float, range(8, 16)))  # ceil(15 / 2)..15, every value


def test_a_slower_deployment_asks_for_a_longer_wait() -> None:
    fast, slow = _draws(10, 1, 0.5), _draws(10, 1, 2.0)
    assert max(fast) <= 5
    assert min(slow) >= 10


@pytest.mark.parametrize(("depth", "concurrency", "pace"), [(1, 32, 0.01), (0, 1, 1.0)])
def test_a_queue_that_drains_at_once_still_spreads_callers(
    depth: int, concurrency: int, pace: float
) -> None:
    assert set(_draws(depth, concurrency, pace)) == {1.0, 2.0}


def test_a_queue_that_drains_for_minutes_is_capped() -> None:
    draws = _draws(1000, 1, 10.0)
    assert min(draws) == queue_room.MAX_S / 2
    assert max(draws) == queue_room.MAX_S


def test_every_answer_is_a_whole_number_of_seconds_within_bounds() -> None:
    rng = random.Random(11)
    for _ in range(2000):
        value = queue_room.retry_after(
            rng.randint(0, 5000), rng.randint(1, 64), rng.uniform(0.0, 120.0), rng
        )
        assert queue_room.MIN_S <= value <= queue_room.MAX_S
        assert value == int(value)
        assert http_retry_after(value) == str(int(value))


def test_an_answer_names_the_deployment_that_refused_or_failed_last() -> None:
    named = Named()
    assert (named.deployment, named.attempts) == ("", 0)
    named.tried(Envelope(request_id="r"))  # no attempt made: nothing to name
    assert (named.deployment, named.attempts) == ("", 0)
    named.tried(Envelope(request_id="r", tried=("a", "b")))
    assert (named.deployment, named.attempts) == ("b", 2)
    named.refused_by("c", Envelope(request_id="r", tried=("a", "b")))
    assert (named.deployment, named.attempts) == ("c", 3)
    named.bounced(Envelope(request_id="r", removed="gone"))
    assert (named.deployment, named.attempts) == ("gone", 0)  # a bounce is no attempt
