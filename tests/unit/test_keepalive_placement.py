"""Keep-alives name their placement (``Sy-Placement``), so that one of a placement the request
has left since is not taken for the next one's (:meth:`ReplyProgress.heard`).

A model-proxy's ``Sy-Begun`` or plain keep-alive that reached the caller after a reroute's
``accepted`` (the reply path does not order one worker's messages against another's) started
the next placement's stream early at an edge (its provider had not begun: a failure there must
still be the 504 an SDK retries) and marked a rerouted batch line as worked on again.
"""

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
    _keepalive,
    decode_reply,
)
from switchyard.errors import DeadlineExceeded
from switchyard.ingress.timeouts import first_reply
from switchyard.runtime.reply_wait import ReplyProgress

pytestmark = pytest.mark.unit

CHUNK = Reply(ReplyKind.CHUNK, b"{}", seq=0)


def _accepted(placement: int, deployment: str) -> Reply:
    return Reply(ReplyKind.ACCEPTED, b"", deployment=deployment, placement=placement)


def _begun(placement: int) -> Reply:
    return Reply(ReplyKind.KEEPALIVE, b"", begun=True, placement=placement)


def _keepalive_of(placement: int) -> Reply:
    return Reply(ReplyKind.KEEPALIVE, b"", placement=placement)


def _passed(progress: ReplyProgress, reply: Reply, attempt: int = 1) -> Reply | None:
    """What ``LLMClient.exchange`` yields for ``reply`` (its steps, in its order)."""
    if reply.kind is ReplyKind.ACCEPTED:
        reply = progress.accepted(reply, attempt)
    elif reply.placement:
        kept = progress.heard(reply, attempt)
        if kept is None:
            return None
        reply = kept
    return reply if progress.admit(reply, 0.0) else None


def test_a_keep_alive_names_its_placement_and_older_ones_read_as_none() -> None:
    begun = decode_reply(b"", _keepalive(BEGUN_HEADERS, "1.1", 2))
    assert (begun.begun, begun.delivery, begun.placement) == (True, "1.1", 2)
    plain = decode_reply(b"", _keepalive(KEEPALIVE_HEADERS, "", 3))
    assert (plain.kind, plain.begun, plain.placement) == (ReplyKind.KEEPALIVE, False, 3)
    assert decode_reply(b"", KEEPALIVE_HEADERS).placement == 0  # an older model-proxy's
    assert _keepalive(KEEPALIVE_HEADERS, "", 0) is KEEPALIVE_HEADERS  # nothing added
    assert _keepalive(BEGUN_HEADERS, "", 1) == {**BEGUN_HEADERS, h.PLACEMENT: "1"}


def test_a_late_keep_alive_of_a_placement_left_since_is_not_passed_on() -> None:
    progress = ReplyProgress()
    assert _passed(progress, _accepted(1, "a")) is None
    assert _passed(progress, _begun(1)) == _begun(1)
    assert _passed(progress, _accepted(2, "b")) is MOVED
    assert _passed(progress, _begun(1)) is None  # late: a's provider no longer serves it
    assert _passed(progress, _keepalive_of(1)) is None
    assert _passed(progress, _keepalive_of(2)) == _keepalive_of(2)
    assert _passed(progress, _begun(2)) == _begun(2)
    # An older model-proxy's keep-alive (no placement) passes as it always did.
    assert _passed(progress, Reply(ReplyKind.KEEPALIVE, b"")) == Reply(ReplyKind.KEEPALIVE, b"")
    # The caller's re-send starts again from placement 1: its keep-alives are not late.
    moved_on = Reply(ReplyKind.KEEPALIVE, b"", begun=True, placement=1, moved=True)
    assert _passed(progress, _begun(1), attempt=2) == moved_on
    assert _passed(progress, _accepted(1, "a"), attempt=2) is None  # the keep-alive told it
    assert _passed(progress, _keepalive_of(3)) is None  # of the earlier attempt


def test_a_keep_alive_ahead_of_its_accepted_tells_the_move_once() -> None:
    """The next placement's keep-alive came before its ``accepted``: the request moved (what
    the earlier placement said no longer holds), and its ``accepted`` then moves nothing."""
    progress = ReplyProgress()
    assert _passed(progress, _accepted(1, "a")) is None
    ahead = _passed(progress, _begun(2))
    assert ahead is not None
    assert (ahead.moved, ahead.begun, ahead.placement) == (True, True, 2)
    assert progress.placed == ""  # no deployment named for it yet
    assert _passed(progress, _accepted(2, "b")) is None
    assert progress.placed == "b"
    assert _passed(progress, _accepted(1, "a")) is None  # the first's, late
    assert _passed(progress, _begun(1)) is None
    # The first placement's keep-alive before any accepted: no move.
    progress = ReplyProgress()
    assert _passed(progress, _keepalive_of(1)) == _keepalive_of(1)
    assert _passed(progress, _accepted(1, "a")) is None
    # A later placement's first (the accepted of the first lost): moved.
    progress = ReplyProgress()
    first = _passed(progress, _keepalive_of(2))
    assert first is not None
    assert first.moved


def test_after_an_older_heads_accepted_keep_alives_pass_as_they_come() -> None:
    progress = ReplyProgress()
    assert _passed(progress, _accepted(0, "a")) is None
    assert _passed(progress, _accepted(0, "b")) is MOVED
    assert _passed(progress, _begun(1)) == _begun(1)  # no order known: today's behaviour


async def _replies(*timed: tuple[float, Reply]) -> AsyncIterator[Reply]:
    """What an edge reads of ``LLMClient.exchange``: each reply ``at`` seconds after the
    first read, through the client's ordering."""
    loop = asyncio.get_running_loop()
    began = loop.time()
    progress = ReplyProgress()
    for at, reply in timed:
        await asyncio.sleep(max(0.0, began + at - loop.time()))
        passed = _passed(progress, reply)
        if passed is not None:
            yield passed


async def test_a_late_begun_of_the_placement_moved_from_starts_no_stream() -> None:
    """a began and failed; the head put the request on b (``accepted``); a's begun came late.
    b's provider has not begun: the SDK's bound is still the 504 it retries."""
    started: list[float] = []
    replies = _replies(
        (0.0, _accepted(1, "a")),
        (0.0, _begun(1)),
        (0.05, _accepted(2, "b")),
        (0.1, _begun(1)),
        (0.6, CHUNK),
    )
    with pytest.raises(DeadlineExceeded):  # grace 0: the bound is the SDK's timeout itself
        await first_reply(replies, 0.4, lambda: started.append(0.0), grace=0.0)
    assert started == []
    # b's own begun starts it.
    replies = _replies(
        (0.0, _accepted(1, "a")),
        (0.0, _begun(1)),
        (0.05, _accepted(2, "b")),
        (0.1, _begun(1)),
        (0.15, _begun(2)),
        (0.6, CHUNK),
    )
    assert await first_reply(replies, 0.4, lambda: started.append(0.0), grace=0.0) is CHUNK
    assert len(started) == 1


async def test_a_begun_of_the_next_placement_ahead_of_its_accepted_starts_the_stream() -> None:
    started: list[float] = []
    replies = _replies(
        (0.0, _accepted(1, "a")),
        (0.0, _begun(1)),
        (0.05, _begun(2)),
        (0.1, _accepted(2, "b")),
        (0.6, CHUNK),
    )
    assert await first_reply(replies, 0.4, lambda: started.append(0.0), grace=0.0) is CHUNK
    assert len(started) == 1
    # A plain keep-alive of the next placement ahead of its accepted: a's begun is over.
    replies = _replies(
        (0.0, _accepted(1, "a")),
        (0.0, _begun(1)),
        (0.05, _keepalive_of(2)),
        (0.6, CHUNK),
    )
    with pytest.raises(DeadlineExceeded):
        await first_reply(replies, 0.4, lambda: started.append(0.0), grace=0.0)
    assert len(started) == 1
