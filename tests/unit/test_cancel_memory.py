"""The model-proxy's memory of recent cancels is bounded in count and in time, and honours a
cancel only for the key, and the attempts, it names."""

from __future__ import annotations

import pytest

from switchyard.bus import headers as h
from switchyard.bus.cancel_proof import cancel_proof
from switchyard.bus.envelope import Envelope
from switchyard.schemas.keys import hash_key
from switchyard.workers.modelproxy.cancels import CancelMemory, Cancels

pytestmark = pytest.mark.unit

KEY = "a" * 64


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0  # a real moment: a deadline before 1973 is refused as seconds

    def __call__(self) -> float:
        return self.now


def _memory(clock: Clock, **limits: float) -> CancelMemory:
    return CancelMemory(clock=clock, **limits)  # type: ignore[arg-type]


def _remember(
    memory: CancelMemory, request_id: str, *, attempt: int, deadline: float | None
) -> None:
    """A cancel of ``request_id`` made with the key hashed ``KEY``."""
    proof = cancel_proof(KEY, request_id)
    memory.remember(request_id, proof, attempt=attempt, deadline=deadline)


def test_a_cancel_is_remembered_until_the_requests_deadline() -> None:
    clock = Clock()
    memory = _memory(clock)
    _remember(memory, "r1", attempt=1, deadline=clock.now + 30)
    assert memory.holds("r1", KEY, 1)
    clock.now += 29
    assert memory.holds("r1", KEY, 1)
    clock.now += 2
    assert not memory.holds("r1", KEY, 1)
    _remember(memory, "r2", attempt=1, deadline=clock.now + 30)
    assert len(memory) == 1  # the expired one is forgotten as the next cancel arrives


def test_time_is_bounded_whatever_the_deadline_says() -> None:
    clock = Clock()
    memory = _memory(clock, longest_s=100, default_s=10)
    _remember(memory, "far", attempt=1, deadline=clock.now + 10_000)
    _remember(memory, "none", attempt=1, deadline=None)
    _remember(memory, "past", attempt=1, deadline=clock.now - 1)
    assert not memory.holds("past", KEY, 1)  # a request past its deadline is dropped anyway
    assert len(memory) == 2
    clock.now += 11
    assert memory.holds("far", KEY, 1)
    assert not memory.holds("none", KEY, 1)
    clock.now += 90
    assert not memory.holds("far", KEY, 1)
    _remember(memory, "next", attempt=1, deadline=None)
    assert len(memory) == 1


def test_count_is_bounded_and_the_one_closest_to_its_end_goes_first() -> None:
    clock = Clock()
    memory = _memory(clock, capacity=3)
    for i, seconds in enumerate([50, 10, 30, 40]):
        _remember(memory, f"r{i}", attempt=1, deadline=clock.now + seconds)
    assert len(memory) == 3
    assert not memory.holds("r1", KEY, 1)  # 10 s left: forgotten to make room
    assert all(memory.holds(r, KEY, 1) for r in ("r0", "r2", "r3"))
    for i in range(100):
        _remember(memory, f"flood{i}", attempt=1, deadline=clock.now + 60)
    assert len(memory) == 3


def test_only_the_key_that_made_the_request_counts() -> None:
    memory = _memory(Clock())
    _remember(memory, "r1", attempt=1, deadline=None)
    assert memory.holds("r1", KEY, 1)
    assert not memory.holds("r1", "b" * 64, 1)
    assert not memory.holds("r2", KEY, 1)


def test_wrong_proofs_for_one_request_id_are_bounded_like_any_cancel() -> None:
    """Proofs of one request id are kept apart and each counts against the capacity: a flood
    of them neither grows the memory nor takes the owner's place before its time."""
    clock = Clock()
    memory = _memory(clock, capacity=3)
    _remember(memory, "r1", attempt=1, deadline=clock.now + 1000)
    for i in range(100):
        wrong = cancel_proof(f"{i:064x}", "r1")
        memory.remember("r1", wrong, attempt=1, deadline=clock.now + 10 + i)
    assert len(memory) == 3
    assert memory.holds("r1", KEY, 1)
    clock.now += 200
    _remember(memory, "r2", attempt=1, deadline=clock.now + 5)
    assert len(memory) == 2  # the wrong ones expired; the owner's and r2's remain
    assert memory.holds("r1", KEY, 1)
    assert not memory.holds("r1", "", 1)  # a request made with no key is never cancelled


def test_a_cancel_extended_by_a_later_one_is_forgotten_by_its_new_end() -> None:
    """When full, the cancel nearest its end goes: an extended one by its new end, not by the
    end it was first remembered with."""
    clock = Clock()
    memory = _memory(clock, capacity=2)
    _remember(memory, "r1", attempt=1, deadline=clock.now + 10)
    _remember(memory, "r1", attempt=2, deadline=clock.now + 1000)  # a later attempt cancelled
    _remember(memory, "r2", attempt=1, deadline=clock.now + 100)
    _remember(memory, "r3", attempt=1, deadline=clock.now + 200)
    assert memory.holds("r1", KEY, 2)
    assert not memory.holds("r2", KEY, 1)
    assert memory.holds("r3", KEY, 1)


def test_a_later_attempt_of_the_same_request_is_served() -> None:
    """The batch runner sends a line again under the same request id, with a higher attempt,
    after an earlier attempt was cancelled (its runner stopped)."""
    clock = Clock()
    memory = _memory(clock)
    _remember(memory, "batch:1", attempt=3, deadline=clock.now + 30)
    assert memory.holds("batch:1", KEY, 1)
    assert memory.holds("batch:1", KEY, 3)
    assert not memory.holds("batch:1", KEY, 4)
    # That later attempt cancelled too (and with a later deadline): both facts move on.
    _remember(memory, "batch:1", attempt=97, deadline=clock.now + 90)
    assert memory.holds("batch:1", KEY, 97)
    assert len(memory) == 1
    clock.now += 60  # past the first deadline: still remembered until the second one
    _remember(memory, "other", attempt=1, deadline=clock.now + 5)
    assert memory.holds("batch:1", KEY, 97)
    clock.now += 31
    _remember(memory, "another", attempt=1, deadline=clock.now + 5)
    assert not memory.holds("batch:1", KEY, 1)
    assert len(memory) == 1


def test_a_cancel_message_is_remembered_for_its_key_and_attempt() -> None:
    """What ``llm.v1.cancel`` carries from an internal caller: the key itself (hashed here),
    the last attempt sent and the deadline. Without a request id or a key it is ignored."""
    cancels = Cancels(_memory(Clock()))
    key = "sk-sy-caller"
    cancels.heard(
        {h.REQUEST_ID: "r1", h.AUTHORIZATION: f"Bearer {key}", h.ATTEMPT: "2"}
        | {h.DEADLINE: str(int((Clock().now + 30) * 1000))}
    )
    cancels.heard({h.REQUEST_ID: "r2"})  # no key: nothing to check it against
    cancels.heard({h.AUTHORIZATION: f"Bearer {key}"})  # no request id
    cancels.heard({h.REQUEST_ID: "bad id with spaces", h.AUTHORIZATION: f"Bearer {key}"})
    assert len(cancels.memory) == 1

    def pulled(attempt: int, key_hash: str = hash_key(key)) -> bool:
        return cancels.left(Envelope(request_id="r1", attempt=attempt, key_hash=key_hash))

    assert pulled(1)
    assert pulled(2)
    assert not pulled(3)
    assert not pulled(1, key_hash=hash_key("sk-sy-someone-else"))


def test_a_cancel_without_an_attempt_ends_every_attempt_so_far() -> None:
    cancels = Cancels(_memory(Clock()))
    cancels.heard({h.REQUEST_ID: "r1", h.AUTHORIZATION: "Bearer sk-sy-caller"})
    assert cancels.left(Envelope(request_id="r1", attempt=7, key_hash=hash_key("sk-sy-caller")))
