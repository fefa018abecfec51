"""The bookkeeping of the concurrency slots an edge holds and renews (no server)."""

from __future__ import annotations

import pytest

from switchyard.limits.limiter import Limiter
from switchyard.limits.slots import BATCH, HeldSlots
from switchyard.schemas.keys import ClientKey

pytestmark = pytest.mark.unit


def test_released_slots_are_not_renewed_and_an_empty_key_is_forgotten() -> None:
    held = HeldSlots(cap_s=100)
    held.take("k1", "a", 0)
    held.take("k1", "b", 0)
    held.take("k2", "c", 0)
    held.release("k1", "a")
    held.release("k2", "c")
    held.release("k2", "c")  # twice, or never taken: no error
    assert list(held.due(1)) == [[("k1", ["b"])]]
    held.release("k1", "b")
    assert not held
    assert list(held.due(1)) == []


def test_renewals_come_in_batches_that_split_a_busy_key() -> None:
    held = HeldSlots(cap_s=100)
    for i in range(BATCH + 10):
        held.take("busy", f"m{i}", 0)
    held.take("quiet", "q", 0)
    batches = list(held.due(1))
    assert [sum(len(members) for _, members in batch) for batch in batches] == [BATCH, 11]
    renewed = [m for batch in batches for _, members in batch for m in members]
    assert sorted(renewed) == sorted([f"m{i}" for i in range(BATCH + 10)] + ["q"])
    assert len(held) == BATCH + 11  # renewing keeps them held


def test_a_slot_older_than_any_deadline_is_no_longer_renewed() -> None:
    held = HeldSlots(cap_s=100)
    held.take("k", "never-settled", 0)
    held.take("k", "recent", 50)
    assert list(held.due(120)) == [[("k", ["recent"])]]
    assert len(held) == 1


def test_drain_hands_over_every_slot_still_held() -> None:
    held = HeldSlots(cap_s=100)
    held.take("k1", "a", 0)
    held.take("k2", "b", 0)
    assert held.drain() == {"k1": ["a"], "k2": ["b"]}
    assert not held


def _refusal(retry_ms: int) -> str:
    key = ClientKey(id="key_x", hash="0" * 64, name="x", max_parallel=2)
    err = Limiter._refusal(key, code=3, retry_ms=retry_ms, spent=0, estimate=1, headers=[])
    assert err.code == "too_many_concurrent_requests"
    assert err.retry_after == retry_ms / 1000
    return err.message


def test_the_parallel_refusal_says_when_a_dead_edges_slots_free() -> None:
    assert _refusal(1000) == "this key allows 2 concurrent requests; wait for one to finish"
    assert "stopped; they free within 42s" in _refusal(42_000)
