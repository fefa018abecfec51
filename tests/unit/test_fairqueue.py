"""The feeder's order: strict priority across classes, weighted DRR across tenants."""

from __future__ import annotations

from collections import Counter

import pytest

from switchyard.control.fairqueue import FairQueue
from switchyard.schemas.scheduling import capped, fair_tenant, of_service_tier

pytestmark = pytest.mark.unit


def _fill(q: FairQueue[str], tenant: str, n: int, weight: float = 1.0, prio: str = "default"):
    for i in range(n):
        q.push(prio, tenant, weight, f"{tenant}{i}")


def _drain(q: FairQueue[str], n: int | None = None) -> list[str]:
    out: list[str] = []
    while n is None or len(out) < n:
        item = q.pop()
        if item is None:
            break
        out.append(item)
    return out


def test_equal_weights_alternate_even_behind_a_long_backlog() -> None:
    q: FairQueue[str] = FairQueue()
    _fill(q, "A", 400)
    _drain(q, 10)  # A alone for a while
    _fill(q, "B", 20)
    first_40 = [item[0] for item in _drain(q, 40)]
    assert Counter(first_40) == {"A": 20, "B": 20}
    assert all(first_40[i] != first_40[i + 1] for i in range(39))


def test_weights_three_to_one_split_starts_three_to_one() -> None:
    q: FairQueue[str] = FairQueue()
    _fill(q, "A", 300, weight=3)
    _fill(q, "B", 300, weight=1)
    counts = Counter(item[0] for item in _drain(q, 200))
    assert counts == {"A": 150, "B": 50}


def test_fractional_weights_save_up_over_rounds() -> None:
    q: FairQueue[str] = FairQueue()
    _fill(q, "A", 100, weight=0.5)
    _fill(q, "B", 100, weight=0.25)
    counts = Counter(item[0] for item in _drain(q, 60))
    assert counts == {"A": 40, "B": 20}


def test_a_higher_class_always_goes_first() -> None:
    q: FairQueue[str] = FairQueue()
    _fill(q, "A", 500, prio="batch")
    assert _drain(q, 3) == ["A0", "A1", "A2"]
    q.push("interactive", "B", 1.0, "urgent")
    q.push("default", "C", 1.0, "normal")
    assert _drain(q, 3) == ["urgent", "normal", "A3"]
    assert len(q) == 496


def test_a_tenant_that_went_idle_gets_no_credit_for_it() -> None:
    q: FairQueue[str] = FairQueue()
    _fill(q, "A", 2)
    _drain(q)
    _fill(q, "A", 10)
    _fill(q, "B", 10)
    assert [i[0] for i in _drain(q, 4)] == ["A", "B", "A", "B"]


def test_per_tenant_order_is_fifo() -> None:
    q: FairQueue[str] = FairQueue()
    _fill(q, "A", 5)
    _fill(q, "B", 5)
    assert [i for i in _drain(q) if i[0] == "A"] == ["A0", "A1", "A2", "A3", "A4"]


def test_a_request_put_back_leaves_first_and_keeps_its_tenant_fifo() -> None:
    q: FairQueue[str] = FairQueue()
    _fill(q, "A", 3)
    first = q.pop()
    assert first == "A0"
    q.push_front("default", "A", 1.0, first)
    assert _drain(q) == ["A0", "A1", "A2"]
    q.push_front("batch", "B", 1.0, "B0")  # into an empty class and tenant
    _fill(q, "B", 1, prio="batch")
    assert _drain(q) == ["B0", "B0"]
    assert len(q) == 0


def test_drop_removes_picked_requests_and_keeps_the_rest_in_order() -> None:
    q: FairQueue[str] = FairQueue()
    _fill(q, "A", 4)
    _fill(q, "B", 2)
    assert sorted(q.drop(lambda i: i in {"A1", "B0", "B1"})) == ["A1", "B0", "B1"]
    assert _drain(q) == ["A0", "A2", "A3"]
    assert len(q) == 0


def test_depths_report_each_waiting_queue() -> None:
    q: FairQueue[str] = FairQueue()
    _fill(q, "A", 3, prio="batch")
    _fill(q, "B", 1, prio="interactive")
    assert sorted(q.depths()) == [("batch", "A", 3, "A0"), ("interactive", "B", 1, "B0")]


def test_service_tier_maps_to_classes_and_keys_cap_them() -> None:
    assert of_service_tier("priority") == "interactive"
    assert of_service_tier("flex") == "batch"
    assert of_service_tier("auto") == of_service_tier("default") == "default"
    assert of_service_tier(None) is None
    assert of_service_tier("unknown") is None
    assert capped("interactive", "default") == "default"
    assert capped("batch", "default") == "batch"
    assert capped("interactive", "interactive") == "interactive"
    assert fair_tenant("team-a", "key_1") == "team-a"
    assert fair_tenant("", "key_1") == "key_1"


async def test_batch_and_file_ids_that_cannot_exist_are_not_looked_up() -> None:
    from nats.aio.client import Client as NATS

    from switchyard.runtime.batchstore import BatchStore

    store = BatchStore(NATS())  # never connected: no lookup may happen
    assert await store.get("\u00d7>", "team") is None  # what the fuzzer sent
    assert await store.file("a.b", "team") is None
    assert await store.get("x" * 200, "team") is None
