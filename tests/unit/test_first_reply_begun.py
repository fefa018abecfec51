"""An SDK's wait for the headers (``X-Stainless-Timeout``) and a provider that has begun
(:func:`~switchyard.ingress.timeouts.first_reply`): the stream starts before the wait runs
out once a model-proxy said so (a keep-alive marked ``Sy-Begun``), and no 504 follows; without
that sign the wait's end is the 504 it was."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from switchyard.bus import headers as h
from switchyard.bus.replies import BEGUN_HEADERS, KEEPALIVE_HEADERS, Reply, ReplyKind, decode_reply
from switchyard.errors import DeadlineExceeded
from switchyard.ingress.timeouts import begin_at, first_reply

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
    assert BEGUN_HEADERS[h.KIND] == KEEPALIVE_HEADERS[h.KIND]  # an older edge skips it
    assert not decode_reply(b"", KEEPALIVE_HEADERS).begun


def test_the_start_comes_ahead_of_the_bound() -> None:
    assert begin_at(1.5) == 0.75
    assert begin_at(60) == 58.0


async def test_a_provider_that_began_at_once_starts_the_stream_ahead_of_the_bound() -> None:
    begin = _Begin()
    replies = _replies((0.0, BEGUN), (0.05, KEEPALIVE), (0.6, CHUNK))
    first = await first_reply(replies, 0.4, begin)
    assert first is CHUNK  # no 504 at 0.4 s: the headers had gone out
    assert len(begin.at) == 1
    assert 0.18 <= begin.at[0] < 0.35, begin.at


async def test_a_provider_that_begins_after_the_time_to_start_starts_it_then() -> None:
    begin = _Begin()
    replies = _replies((0.3, BEGUN), (0.6, CHUNK))
    assert await first_reply(replies, 0.4, begin) is CHUNK
    assert len(begin.at) == 1
    assert 0.28 <= begin.at[0] < 0.38, begin.at


async def test_without_the_sign_the_bound_is_a_504_and_nothing_started() -> None:
    begin = _Begin()
    replies = _replies((0.0, KEEPALIVE), (0.6, CHUNK))
    with pytest.raises(DeadlineExceeded, match="X-Stainless-Timeout"):
        await first_reply(replies, 0.4, begin)
    assert begin.at == []


async def test_content_in_time_starts_nothing_early() -> None:
    begin = _Begin()
    replies = _replies((0.0, BEGUN), (0.05, CHUNK))
    assert await first_reply(replies, 0.4, begin) is CHUNK
    await asyncio.sleep(0.3)  # past the time to start: its timer was cancelled
    assert begin.at == []
