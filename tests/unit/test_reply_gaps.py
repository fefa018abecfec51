"""A reply stream with a gap (messages lost while a worker's NATS node failed) is held back
until the worker's replay fills it, and each chunk is yielded once, in order."""

from __future__ import annotations

import pytest

from switchyard.bus import headers as h
from switchyard.bus.replies import (
    KEEPALIVE_HEADERS,
    Reply,
    ReplyKind,
    decode_reply,
    error_headers,
)
from switchyard.errors import ProviderError
from switchyard.runtime.reply_wait import GAP_WAIT_S, ReplyProgress, Resend
from switchyard.schemas.openai import error_body
from switchyard.workers.modelproxy.replay import late_replay_needed, replay_needed

pytestmark = pytest.mark.unit


def chunk(seq: int, delivery: str = "1.1") -> Reply:
    return Reply(ReplyKind.CHUNK, f"c{seq}".encode(), delivery=delivery, seq=seq)


def final(chunks: int) -> Reply:
    return Reply(ReplyKind.FINAL, b"", seq=chunks)


def test_a_replay_fills_the_gap_and_nothing_is_yielded_twice() -> None:
    progress = ReplyProgress()
    order = [chunk(0), chunk(1), chunk(4), final(5)]  # 2 and 3 were lost
    order += [chunk(0), chunk(1), chunk(2), chunk(3), chunk(4), final(5)]  # the replay
    yielded = []
    for n, reply in enumerate(order):
        keep = (
            progress.chunk(reply, now=n)
            if reply.kind is ReplyKind.CHUNK
            else progress.final(reply, now=n)
        )
        if keep:
            yielded.append((reply.kind, reply.seq))
    assert yielded == [(ReplyKind.CHUNK, s) for s in range(5)] + [(ReplyKind.FINAL, 5)]
    assert progress.gap_since is None


def test_a_gap_that_stays_ends_the_stream_clearly() -> None:
    progress = ReplyProgress()
    assert progress.chunk(chunk(0), now=0.0)
    assert not progress.final(final(3), now=1.0)
    assert progress.wait_until(100.0) == 1.0 + GAP_WAIT_S
    with pytest.raises(ProviderError) as info:
        progress.check(None, past_deadline=False, last=False, now=1.0 + GAP_WAIT_S)
    assert info.value.code == "stream_interrupted"


def test_a_gap_before_any_content_re_sends_the_request() -> None:
    progress = ReplyProgress()
    assert not progress.chunk(chunk(1), now=0.0)  # chunk 0 lost
    with pytest.raises(Resend):
        progress.check(None, past_deadline=False, last=False, now=GAP_WAIT_S)


def test_a_non_streaming_final_and_unnumbered_chunks_pass() -> None:
    progress = ReplyProgress()
    assert progress.final(Reply(ReplyKind.FINAL, b"{}"), now=0.0)
    assert ReplyProgress().chunk(Reply(ReplyKind.CHUNK, b"x", delivery="1.1"), now=0.0)


@pytest.mark.parametrize(
    ("answered", "ended", "reconnected", "replay"),
    [
        (True, True, False, False),  # the normal path: one copy, with its terminator
        (True, True, True, True),  # a reconnect since the job began: the first copy may be lost
        # Down when the answer went (no terminator) and not back yet when this is decided: the
        # reply path stays open unless a whole copy follows with the terminator.
        (True, False, False, True),
        (False, True, True, False),  # nothing answered (billed for an abandoned stream)
    ],
)
def test_an_answer_is_replayed_after_a_reconnect_or_when_it_went_without_its_terminator(
    answered: bool, ended: bool, reconnected: bool, replay: bool
) -> None:
    assert replay_needed(answered=answered, ended=ended, reconnected=reconnected) is replay


@pytest.mark.parametrize(
    ("answered", "reconnected", "cancelled", "deadline", "replay"),
    [
        (True, True, False, 0.0, True),  # broke while the bill waited: the end may be lost
        (True, True, False, 100.0, True),  # and the caller still waits
        (True, False, False, 100.0, False),  # nothing broke: one copy
        (True, True, True, 100.0, False),  # its caller left
        (True, True, False, 10.0, False),  # past its deadline: the caller's 504 ended it
        (False, True, False, 100.0, False),  # nothing was answered
    ],
)
def test_an_answer_is_sent_again_when_its_bill_finds_the_connection_broken(
    answered: bool, reconnected: bool, cancelled: bool, deadline: float, replay: bool
) -> None:
    late = late_replay_needed(
        answered=answered,
        reconnected=reconnected,
        cancelled=cancelled,
        deadline=deadline,
        now=50.0,
    )
    assert late is replay


def announced(delivery: str) -> Reply:
    return Reply(ReplyKind.KEEPALIVE, b"", delivery=delivery)


def test_a_new_delivery_announced_after_content_ends_the_stream_before_its_call() -> None:
    """A redelivered stream announces itself (a keep-alive naming its delivery) before its
    provider call: after another delivery's content it cannot follow, so the stream ends
    (and the caller's cancel stops the copy); before any content it is simply awaited."""
    fresh = ReplyProgress()
    assert fresh.admit(announced("1.2"), now=0.0)  # nothing sent yet: the new copy serves
    assert fresh.admit(chunk(0, "1.2"), now=0.0)
    progress = ReplyProgress()
    assert progress.admit(chunk(0, "1.1"), now=0.0)
    assert progress.admit(announced("1.1"), now=0.0)  # its own delivery: nothing changes
    assert progress.admit(announced(""), now=0.0)  # a plain keep-alive names none
    with pytest.raises(ProviderError) as info:
        progress.admit(announced("1.2"), now=1.0)
    assert info.value.code == "stream_interrupted"


def test_a_keepalive_reads_its_delivery_and_others_do_not_need_one() -> None:
    assert decode_reply(b"", {**KEEPALIVE_HEADERS, h.ATTEMPT: "2.3"}).delivery == "2.3"
    assert decode_reply(b"", KEEPALIVE_HEADERS).delivery == ""


def test_an_error_ending_a_stream_in_its_dialect_waits_for_the_chunks_it_follows() -> None:
    """A Responses or Messages stream that failed after content ends with an error marked
    ``Sy-Error-In-Stream``: its last chunk is the dialect's own error event, which the edge
    relays instead of adding one. Lost, the client's stream would just stop, so such an error
    is held like a final until the replay brings every chunk it follows."""
    failed = ProviderError("upstream broke", provider="d1", code="stream_interrupted")
    headers = error_headers(failed, in_stream=True, chunks=3)
    ending = decode_reply(error_body(failed), headers)
    assert ending.in_stream
    assert ending.seq == 3
    progress = ReplyProgress()
    assert progress.admit(chunk(0), now=0.0)
    assert progress.admit(chunk(1), now=0.0)
    assert not progress.admit(ending, now=1.0)  # chunk 2, the error event, was lost
    assert progress.gap_since == 1.0
    assert progress.admit(chunk(2), now=2.0)  # the replay
    assert progress.admit(ending, now=2.0)
    plain = decode_reply(error_body(failed), error_headers(failed))  # not in a stream
    assert ReplyProgress().admit(plain, now=0.0)
