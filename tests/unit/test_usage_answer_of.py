"""Which answer a stopped call's usage event belongs to (accounting skips a stopped copy of a
request whose answer it billed): the id's last two parts are the hops and the stop, so a
billing id may hold colons of its own."""

from __future__ import annotations

import pytest

from switchyard.schemas.events import answer_of

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("event_id", "answer"),
    [
        ("req-1.u7:dep-a:left", "req-1.u7:answered"),
        ("req-1.u7:dep-a,dep-b:late", "req-1.u7:answered"),
        ("req-1.u7::left", "req-1.u7:answered"),  # stopped on its first deployment's hop
        ("batch:b1:line:4:dep-a:left", "batch:b1:line:4:answered"),
        ("req-1.u7:answered", "req-1.u7:answered"),  # an answer is its own
        ("req-1.u7:dep-a", "req-1.u7:dep-a"),  # a failure is billed by its hop alone
        ("left", "left"),
        ("a:left", "a:left"),  # no hops part: not a stopped call's id
    ],
)
def test_a_stopped_calls_event_names_its_requests_answer(event_id: str, answer: str) -> None:
    assert answer_of(event_id) == answer
