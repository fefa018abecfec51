"""The feeder lease: one holder at a time, taken over only after it expired."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from nats.errors import NoRespondersError
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

from switchyard.control.lease import Lease

pytestmark = pytest.mark.unit


@dataclass
class _Entry:
    value: bytes
    revision: int


class FakeKV:
    """Compare-and-set semantics of a NATS KV bucket, in memory."""

    def __init__(self) -> None:
        self.entries: dict[str, _Entry] = {}
        self.revision = 0
        self.down = False  # the bucket is unreachable (a NATS failover)

    async def get(self, key: str) -> _Entry:
        if self.down:
            raise NoRespondersError
        if key not in self.entries:
            raise KeyNotFoundError
        return self.entries[key]

    async def create(self, key: str, value: bytes) -> int:
        if key in self.entries:
            raise KeyWrongLastSequenceError
        return self._put(key, value)

    async def update(self, key: str, value: bytes, last: int) -> int:
        if key not in self.entries or self.entries[key].revision != last:
            raise KeyWrongLastSequenceError
        return self._put(key, value)

    async def delete(self, key: str, last: int) -> None:
        if self.entries.get(key) and self.entries[key].revision == last:
            del self.entries[key]

    def _put(self, key: str, value: bytes) -> int:
        self.revision += 1
        self.entries[key] = _Entry(value, self.revision)
        return self.revision


async def test_one_holder_until_it_stops_renewing() -> None:
    kv = FakeKV()
    a = Lease(kv, "a", ttl=6)  # type: ignore[arg-type]
    b = Lease(kv, "b", ttl=6)  # type: ignore[arg-type]
    assert await a.renew(now=100.0)
    assert not await b.renew(now=101.0)
    assert await a.renew(now=103.0)  # renewed: valid until 109
    assert not await b.renew(now=108.0)
    assert await b.renew(now=110.0)  # a went quiet: b takes over
    assert not await a.renew(now=111.0)


async def test_a_clean_stop_hands_the_lease_over_at_once() -> None:
    kv = FakeKV()
    a = Lease(kv, "a", ttl=6)  # type: ignore[arg-type]
    b = Lease(kv, "b", ttl=6)  # type: ignore[arg-type]
    assert await a.renew(now=100.0)
    await b.release()  # not b's to give: nothing changes
    assert not await b.renew(now=101.0)
    await a.release()
    assert await b.renew(now=101.0)


async def test_a_missed_renewal_keeps_the_lease_while_a_margin_is_left() -> None:
    kv = FakeKV()
    a = Lease(kv, "a", ttl=6)  # type: ignore[arg-type]
    b = Lease(kv, "b", ttl=6)  # type: ignore[arg-type]
    assert await a.renew(now=100.0)  # valid until 106
    kv.down = True
    assert await a.renew(now=102.0)  # unreachable, but 4 s of its lease are left
    assert not await a.renew(now=104.0)  # 2 s left: stop feeding before b may take it
    kv.down = False
    assert not await b.renew(now=105.9)
    assert await b.renew(now=106.1)
    assert not await a.renew(now=106.2)
    kv.down = True
    assert not await a.renew(now=106.3)  # it lost the lease: an outage does not give it back


async def test_never_holding_means_an_outage_grants_nothing() -> None:
    kv = FakeKV()
    kv.down = True
    assert not await Lease(kv, "a", ttl=6).renew(now=100.0)  # type: ignore[arg-type]
