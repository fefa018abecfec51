"""A copy of a dispatch message handled after its job ended here is recognised, not served
(``modelproxy/serving.py``): only for messages acknowledged late enough that their claim may
have lapsed, only for later deliveries, and only for a while."""

from __future__ import annotations

import time

import pytest
from nats.aio.msg import Msg

from switchyard.bus.envelope import Envelope
from switchyard.workers.modelproxy import serving
from switchyard.workers.modelproxy.heartbeat import InFlight
from switchyard.workers.modelproxy.job import Job
from switchyard.workers.modelproxy.serving import Serving

pytestmark = pytest.mark.unit

ACK_WAIT_S = 10.0


def _msg(seq: int, delivered: int, stored_s_ago: float) -> Msg:
    stored = time.time_ns() - int(stored_s_ago * 1e9)
    return Msg(
        _client=None,  # type: ignore[arg-type]  # never used: nothing is acked here
        subject="llm.v1.dispatch.fake.m",
        reply=f"$JS.ACK.DISPATCH.mp.{delivered}.{seq}.{seq}.{stored}.0",
        data=b"{}",
    )


def _ended(table: Serving, msg: Msg, *, acked: bool = True) -> None:
    env = Envelope(request_id=f"r{msg.metadata.sequence.stream}", op="chat", reply="_INBOX_e.r")
    job = Job(
        msg=msg,
        env=env,
        deployment_id="fake.m",
        inflight=InFlight(reply=env.reply, msg=msg, last_sent=0.0, last_progress=0.0),
    )
    table.add(job)
    job.acked = acked
    table.remove(job)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_late_copy_of_a_long_request_answered_here_is_not_served() -> None:
    clock = Clock()
    table = Serving(ACK_WAIT_S, clock=clock)
    _ended(table, _msg(7, 1, stored_s_ago=ACK_WAIT_S))
    assert table.done(_msg(7, 2, stored_s_ago=ACK_WAIT_S))
    assert not table.done(_msg(8, 2, stored_s_ago=ACK_WAIT_S))  # another message
    assert not table.done(_msg(7, 1, stored_s_ago=ACK_WAIT_S))  # not a later delivery
    clock.now += max(serving.DONE_KEPT_S, 3 * ACK_WAIT_S) + 1  # no copy can still come
    assert not table.done(_msg(7, 2, stored_s_ago=ACK_WAIT_S))


def test_quick_or_unacknowledged_requests_are_not_remembered() -> None:
    table = Serving(ACK_WAIT_S, clock=Clock())
    _ended(table, _msg(1, 1, stored_s_ago=0.5))  # acked long before its claim could lapse
    _ended(table, _msg(2, 1, stored_s_ago=ACK_WAIT_S), acked=False)  # handed back: nak
    assert not table.done(_msg(1, 2, stored_s_ago=ACK_WAIT_S))
    assert not table.done(_msg(2, 2, stored_s_ago=ACK_WAIT_S))


def test_the_memory_is_bounded_oldest_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(serving, "DONE_KEPT", 3)
    table = Serving(ACK_WAIT_S, clock=Clock())
    for seq in range(1, 6):
        _ended(table, _msg(seq, 1, stored_s_ago=ACK_WAIT_S))
    remembered = [seq for seq in range(1, 6) if table.done(_msg(seq, 2, stored_s_ago=1))]
    assert remembered == [3, 4, 5]
