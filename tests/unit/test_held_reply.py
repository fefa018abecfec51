"""The feeder reads a held request's stream sequence and store time from its reply subject
(what ``msg.metadata`` gives, without its datetime), in both forms JetStream sends."""

from __future__ import annotations

import pytest
from nats.aio.msg import Msg
from nats.errors import NotJSMessageError

from switchyard.control.held import read_held
from switchyard.control.held import sequence_and_time as _sequence_and_time

pytestmark = pytest.mark.unit

NS = 1_733_350_000_123_456_789


@pytest.mark.parametrize(
    "reply",
    [
        f"$JS.ACK.HOLD.feeder.1.12345.7.{NS}.0",  # the form nats-server sends today
        f"$JS.ACK.hub.ACCHASH.HOLD.feeder.1.12345.7.{NS}.0",  # with domain and account
        f"$JS.ACK.hub.ACCHASH.HOLD.feeder.1.12345.7.{NS}.0.rand",  # and a trailing token
    ],
)
def test_sequence_and_time_match_nats_py_metadata(reply: str) -> None:
    msg = Msg(_client=None, subject="llm.v1.hold.d.default.t", reply=reply)  # type: ignore[arg-type]
    seq, stored_at = _sequence_and_time(msg)
    assert seq == msg.metadata.sequence.stream == 12345
    assert stored_at == pytest.approx(msg.metadata.timestamp.timestamp(), abs=1e-6)


def test_a_reply_that_is_not_jetstream_s_is_refused_as_nats_py_refuses_it() -> None:
    msg = Msg(_client=None, subject="s", reply="_INBOX.x")  # type: ignore[arg-type]
    with pytest.raises(NotJSMessageError):
        _sequence_and_time(msg)


def test_read_held_keeps_who_to_answer_if_its_deadline_passes() -> None:
    """An expired held request is answered to its Sy-Reply, with its id, attempt and the limit
    that set its deadline (control/heldexpiry.py)."""
    headers = {
        "Sy-Reply": "_R_.abc.def",
        "Sy-Request-Id": "req-1",
        "Sy-Attempt": "2",
        "Sy-Deadline-By": "default",
        "Sy-Deadline": "1733350000123",
    }
    msg = Msg(_client=None, subject="llm.v1.hold.d.default.t", headers=headers)  # type: ignore[arg-type]
    item = read_held(msg, seq=1, stored_at=1.0, deployment="d", priority="default", tenant="t")
    assert (item.reply, item.request_id, item.attempt, item.deadline_by) == (
        "_R_.abc.def",
        "req-1",
        2,
        "default",
    )
    assert item.deadline_ms == 1733350000123
    bare = Msg(_client=None, subject="llm.v1.hold.d.default.t", headers={"Sy-Attempt": "x"})  # type: ignore[arg-type]
    item = read_held(bare, seq=1, stored_at=1.0, deployment="d", priority="default", tenant="t")
    assert (item.reply, item.attempt, item.deadline_by) == ("", 0, "")
