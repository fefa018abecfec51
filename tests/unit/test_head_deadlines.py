"""Which limit set a bus caller's deadline, as the head's 504 names it (runtime.deadlines).

Over NATS, against a real head: tests/test_head_deadline_names.py.
"""

from __future__ import annotations

import pytest

from switchyard.bus import headers as h
from switchyard.bus import identities
from switchyard.bus.envelope import Deadline, Envelope
from switchyard.config import IngressSettings
from switchyard.errors import DeadlineExceeded, ServiceUnavailable
from switchyard.runtime import deadlines

pytestmark = pytest.mark.unit

INGRESS = IngressSettings(default_deadline_s=600.0, max_deadline_s=3600.0)


def test_the_head_tells_which_limit_sets_a_bus_callers_deadline() -> None:
    env = Envelope(request_id="r")
    assert deadlines.set_by(env, "app", INGRESS) == deadlines.DEFAULT
    soon = env.with_(deadline=Deadline.after(30))
    assert deadlines.set_by(soon, "app", INGRESS) == deadlines.CALLER
    late = env.with_(deadline=Deadline.after(7200))
    assert deadlines.set_by(late, "app", INGRESS) == deadlines.CAPPED
    # An edge names its own limits; the batch runner's deadline is not capped.
    assert deadlines.set_by(env, identities.TAIL.name, INGRESS) == ""
    assert deadlines.set_by(late, identities.BATCH.name, INGRESS) == deadlines.CALLER


@pytest.mark.parametrize(
    ("by", "words"),
    [
        (deadlines.CALLER, "(the deadline was the caller's own Sy-Deadline)"),
        (deadlines.CAPPED, "ingress.max_deadline_s (3600 s), which capped Sy-Deadline)"),
        (deadlines.DEFAULT, "ingress.default_deadline_s (600 s): the request set no Sy-Deadline"),
    ],
)
def test_a_deadlines_504_names_the_limit(by: str, words: str) -> None:
    error = DeadlineExceeded("the request deadline passed before it was routed")
    deadlines.named(error, by, INGRESS)
    assert words in error.message


def test_other_answers_and_unknown_limits_are_left_as_they_are() -> None:
    stale = DeadlineExceeded("this attempt reached a head 3.0 s after its Sy-Accept-By")
    full = ServiceUnavailable("the request deadline passed", code="queue_full")
    edge = DeadlineExceeded("the request deadline passed before it was routed")
    for error, by in ((stale, deadlines.CALLER), (full, deadlines.CALLER), (edge, "")):
        before = error.message
        deadlines.named(error, by, INGRESS)
        assert error.message == before


def test_the_stamp_travels_with_the_request() -> None:
    env = Envelope(request_id="r", op="chat", deadline_by=deadlines.DEFAULT)
    assert env.encode()[h.DEADLINE_BY] == "default"
    assert Envelope.decode(env.encode()).deadline_by == "default"
