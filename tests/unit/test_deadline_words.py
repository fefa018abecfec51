"""A request whose deadline passes says how far its answer had come, and which deployment
had it."""

from __future__ import annotations

import pytest

from switchyard.bus import headers as h
from switchyard.bus.envelope import Envelope
from switchyard.bus.replies import Reply, ReplyKind, decode_reply
from switchyard.errors import DeadlineExceeded
from switchyard.runtime.reply_wait import ReplyProgress

pytestmark = pytest.mark.unit


def _expired(progress: ReplyProgress) -> DeadlineExceeded:
    with pytest.raises(DeadlineExceeded) as info:
        progress.check(None, past_deadline=True, last=False, now=0.0)
    return info.value


def test_a_deadline_passed_mid_stream_says_the_answer_was_streaming() -> None:
    """An explorer's repro: `X-Request-Timeout: 3` on a 10 s stream ended, after 30 chunks,
    with "the request deadline passed before an answer arrived"."""
    progress = ReplyProgress()
    for seq in range(30):
        reply = Reply(ReplyKind.CHUNK, b"c", delivery="1.1", seq=seq)
        assert progress.admit(reply, now=float(seq))
    failure = _expired(progress)
    assert failure.message == (
        "the request deadline passed while the answer was streaming, after 30 chunks"
    )
    assert (failure.status, failure.code) == (504, "deadline_exceeded")
    assert (
        "after 30 chunks (this process"
        in progress.deadline_passed(" (this process is not connected to NATS)").message
    )


def test_one_chunk_is_said_in_the_singular() -> None:
    progress = ReplyProgress()
    assert progress.admit(Reply(ReplyKind.CHUNK, b"c", delivery="1.1", seq=0), now=0.0)
    assert _expired(progress).message.endswith("after 1 chunk")


def test_a_deadline_passed_before_any_chunk_says_no_answer_arrived() -> None:
    progress = ReplyProgress()
    assert progress.admit(Reply(ReplyKind.KEEPALIVE, b""), now=0.0)
    assert _expired(progress).message == "the request deadline passed before an answer arrived"


def test_the_deployment_whose_queue_took_it_is_named_on_the_504() -> None:
    """A head's `accepted` names the deployment it queued the request for: the edge's 504 then
    carries `x-switchyard-deployment`, as every answer of a deployment does."""
    accepted = decode_reply(b"", {h.KIND: "accepted", h.REQUEST_ID: "r1", h.DEPLOYMENT: "p--m"})
    assert (accepted.kind, accepted.deployment, accepted.request_id) == (
        ReplyKind.ACCEPTED,
        "p--m",
        "r1",
    )
    progress = ReplyProgress(placed=accepted.deployment)
    assert _expired(progress).headers == ((b"x-switchyard-deployment", b"p--m"),)
    assert _expired(ReplyProgress()).headers == ()  # no head took it: nothing to name


def _accepted(deployment: str, placement: int) -> Reply:
    headers = {h.KIND: "accepted", h.DEPLOYMENT: deployment}
    return decode_reply(b"", headers | ({h.PLACEMENT: str(placement)} if placement else {}))


def test_the_latest_placement_is_named_whatever_order_the_accepteds_come_in() -> None:
    """The first placement (1), a reroute (2), a removal bounce then (3): each head's
    ``accepted`` names its own, and one that comes late names none of the later ones' place.
    A new attempt of the caller starts over; an older head's (no placement) is taken."""
    progress = ReplyProgress()
    for deployment, placement in (("b", 2), ("a", 1), ("c", 3), ("b", 2)):
        progress.accepted(_accepted(deployment, placement), attempt=1)
    assert progress.placed == "c"
    progress.accepted(_accepted("d", 1), attempt=2)  # sent again: its own placements now
    assert progress.placed == "d"
    progress.accepted(_accepted("e", 0), attempt=2)
    assert progress.placed == "e"
    progress.accepted(_accepted("", 5), attempt=2)  # names none: nothing changes
    assert progress.placed == "e"


def test_a_requests_placement_counts_reroutes_and_bounces() -> None:
    first = Envelope(request_id="r1")
    assert first.placement == 1
    assert first.with_(tried=("a",)).placement == 2
    assert first.with_(tried=("a",), bounces=1).placement == 3
