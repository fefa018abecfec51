"""An SDK's wait for the headers (``X-Stainless-Timeout``) and a provider that has begun
(:func:`~switchyard.ingress.timeouts.first_reply`): the stream starts before the wait runs
out once a model-proxy said so (a keep-alive marked ``Sy-Begun``), and no 504 follows; without
that sign the wait's end is the 504 it was (``grace=0.0``: the bound is the SDK's
timeout itself here; the 504's grace past it is tested in test_responses_stream_end.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from switchyard.bus import headers as h
from switchyard.bus.replies import (
    BEGUN_HEADERS,
    KEEPALIVE_HEADERS,
    MOVED,
    Reply,
    ReplyKind,
    decode_reply,
)
from switchyard.errors import DeadlineExceeded
from switchyard.ingress.timeouts import begin_at, first_reply
from switchyard.runtime.reply_wait import ReplyProgress

pytestmark = pytest.mark.unit

BEGUN = Reply(ReplyKind.KEEPALIVE, b"", begun=True)
KEEPALIVE = Reply(ReplyKind.KEEPALIVE, b"")
CHUNK = Reply(ReplyKind.CHUNK, b"{}", seq=0)


async def _replies(*timed: tuple[float, Reply]) -> AsyncIterator[Reply]:
    """Each reply ``at`` seconds after the first read."""
    loop = asyncio.get_running_loop()
    began = loop.time()
    for at, reply in timed:
        await asyncio.sleep(max(0.0, began + at - loop.time()))
        yield reply


class _Begin:
    def __init__(self) -> None:
        self.at: list[float] = []
        self._loop = asyncio.get_running_loop()
        self._began = self._loop.time()

    def __call__(self) -> None:
        self.at.append(self._loop.time() - self._began)


def test_the_sign_is_a_keep_alive_header_older_callers_read_as_one() -> None:
    begun = decode_reply(b"", BEGUN_HEADERS)
    assert begun.kind is ReplyKind.KEEPALIVE
    assert begun.begun
    named = decode_reply(b"", {**BEGUN_HEADERS, h.ATTEMPT: "1.2"})
    assert (named.begun, named.delivery) == (True, "1.2")  # which delivery began
    assert BEGUN_HEADERS[h.KIND] == KEEPALIVE_HEADERS[h.KIND]  # an older edge skips it
    assert not decode_reply(b"", KEEPALIVE_HEADERS).begun


def test_the_start_comes_ahead_of_the_bound() -> None:
    assert begin_at(1.5) == 0.75
    assert begin_at(60) == 58.0


async def test_a_provider_that_began_at_once_starts_the_stream_ahead_of_the_bound() -> None:
    begin = _Begin()
    replies = _replies((0.0, BEGUN), (0.05, KEEPALIVE), (0.6, CHUNK))
    first = await first_reply(replies, 0.4, begin, grace=0.0)
    assert first is CHUNK  # no 504 at 0.4 s: the headers had gone out
    assert len(begin.at) == 1
    assert 0.18 <= begin.at[0] < 0.35, begin.at


async def test_a_provider_that_begins_after_the_time_to_start_starts_it_then() -> None:
    begin = _Begin()
    replies = _replies((0.3, BEGUN), (0.6, CHUNK))
    assert await first_reply(replies, 0.4, begin, grace=0.0) is CHUNK
    assert len(begin.at) == 1
    assert 0.28 <= begin.at[0] < 0.38, begin.at


async def test_without_the_sign_the_bound_is_a_504_and_nothing_started() -> None:
    begin = _Begin()
    replies = _replies((0.0, KEEPALIVE), (0.6, CHUNK))
    with pytest.raises(DeadlineExceeded, match="X-Stainless-Timeout"):
        await first_reply(replies, 0.4, begin, grace=0.0)
    assert begin.at == []


async def test_content_in_time_starts_nothing_early() -> None:
    begin = _Begin()
    replies = _replies((0.0, BEGUN), (0.05, CHUNK))
    assert await first_reply(replies, 0.4, begin, grace=0.0) is CHUNK
    await asyncio.sleep(0.3)  # past the time to start: its timer was cancelled
    assert begin.at == []


MOVED_ON = Reply(ReplyKind.KEEPALIVE, b"", moved=True)


async def test_a_begun_of_a_placement_the_head_moved_from_starts_nothing() -> None:
    """The first deployment sent its role (begun) and failed before content; the head rerouted
    the request (``replies.MOVED``, from its next ``accepted``): the next provider has not
    begun, so the bound is still the 504 an SDK retries (a review: it was a 200 whose
    failure became an error event)."""
    begin = _Begin()
    replies = _replies((0.0, BEGUN), (0.05, MOVED), (0.6, CHUNK))
    with pytest.raises(DeadlineExceeded):
        await first_reply(replies, 0.4, begin, grace=0.0)
    assert begin.at == []
    assert MOVED == MOVED_ON
    assert MOVED.kind is ReplyKind.KEEPALIVE  # a caller that does not ask skips it


async def test_the_next_placements_begun_starts_the_stream() -> None:
    begin = _Begin()
    replies = _replies((0.0, BEGUN), (0.05, MOVED), (0.1, BEGUN), (0.6, CHUNK))
    assert await first_reply(replies, 0.4, begin, grace=0.0) is CHUNK
    assert len(begin.at) == 1


async def test_a_begun_of_an_earlier_delivery_starts_nothing() -> None:
    """A redelivery announces itself (a keep-alive naming its delivery): the begun of the
    delivery before it no longer holds; a keep-alive of the same delivery changes nothing."""
    begun = Reply(ReplyKind.KEEPALIVE, b"", delivery="1.1", begun=True)
    same = Reply(ReplyKind.KEEPALIVE, b"", delivery="1.1")
    other = Reply(ReplyKind.KEEPALIVE, b"", delivery="1.2")
    begin = _Begin()
    with pytest.raises(DeadlineExceeded):
        await first_reply(
            _replies((0.0, begun), (0.05, other), (0.6, CHUNK)), 0.4, begin, grace=0.0
        )
    assert begin.at == []
    assert await first_reply(
        _replies((0.0, begun), (0.05, same), (0.6, CHUNK)), 0.4, begin, grace=0.0
    )
    assert len(begin.at) == 1


def test_a_later_placements_accepted_is_yielded_as_moved() -> None:
    """What ``LLMClient.exchange`` yields for an ``accepted``: nothing for the first, nor for an
    earlier placement's that came late; ``MOVED`` for a later placement or attempt (and for an
    older head's second accepted, which names no placement)."""
    progress = ReplyProgress()

    def accepted(placement: int, deployment: str = "d") -> Reply:
        return Reply(ReplyKind.ACCEPTED, b"", deployment=deployment, placement=placement)

    def passed(reply: Reply, attempt: int = 1) -> Reply | None:
        out = progress.accepted(reply, attempt)
        return out if progress.admit(out, 0.0) else None

    assert passed(accepted(1)) is None
    assert passed(accepted(2, "e")) is MOVED
    assert passed(accepted(1)) is None  # late: the request is on e
    assert progress.placed == "e"
    assert passed(accepted(1), attempt=2) is MOVED  # the caller's re-send
    progress = ReplyProgress()  # heads that name no placement
    assert passed(accepted(0)) is None
    assert passed(accepted(0, "e")) is MOVED
    # A reroute's accepted before the first placement's (which comes late or never): the
    # request moved all the same, and the first placement's begun no longer holds (a review).
    progress = ReplyProgress()
    assert passed(accepted(2, "e")) is MOVED
    assert passed(accepted(1)) is None


async def test_a_begun_after_the_sdks_timeout_starts_nothing_and_the_504_follows() -> None:
    """The 504 comes a grace after the SDK's timeout, but the SDK gave up at the timeout: a
    provider that begins in the grace must not start a stream nobody reads, nor clear the 504
    (a review: begun at 0.6 s of 0.4 s started it, and it ran to its end)."""
    begin = _Begin()
    loop = asyncio.get_running_loop()
    began = loop.time()
    replies = _replies((0.6, BEGUN), (3.0, CHUNK))
    with pytest.raises(DeadlineExceeded, match="X-Stainless-Timeout"):
        await first_reply(replies, 0.4, begin, grace=1.0)
    assert 1.3 <= loop.time() - began < 2.0
    assert begin.at == []
