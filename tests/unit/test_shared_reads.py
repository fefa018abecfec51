"""One read per key per while, shared by the callers asking meanwhile (``runtime.shared_reads``)."""

from __future__ import annotations

import asyncio

import pytest

from switchyard.runtime.shared_reads import SharedReads


class Source:
    def __init__(self) -> None:
        self.reads: list[str] = []
        self.gate = asyncio.Event()
        self.fail = False

    async def fetch(self, key: str) -> int:
        self.reads.append(key)
        await self.gate.wait()
        if self.fail:
            raise RuntimeError("store down")
        return len(self.reads)


async def test_callers_asking_meanwhile_share_one_read_and_its_answer_is_kept() -> None:
    source = Source()
    reads = SharedReads(source.fetch, cache_s=60)
    waiting = [asyncio.ensure_future(reads.get("k")) for _ in range(5)]
    await asyncio.sleep(0)
    source.gate.set()
    assert await asyncio.gather(*waiting) == [1] * 5
    assert await reads.get("k") == 1  # kept: no second read
    assert source.reads == ["k"]
    assert await reads.get("other") == 2
    assert len(reads) == 2


async def test_a_cancelled_caller_does_not_cancel_the_read_others_wait_on() -> None:
    source = Source()
    reads = SharedReads(source.fetch, cache_s=60)
    leaving = asyncio.ensure_future(reads.get("k"))
    staying = asyncio.ensure_future(reads.get("k"))
    await asyncio.sleep(0)
    leaving.cancel()
    source.gate.set()
    assert await staying == 1
    with pytest.raises(asyncio.CancelledError):
        await leaving


async def test_a_failed_read_reaches_every_caller_and_is_not_kept() -> None:
    source = Source()
    source.fail = True
    source.gate.set()
    reads = SharedReads(source.fetch, cache_s=60)
    results = await asyncio.gather(reads.get("k"), reads.get("k"), return_exceptions=True)
    assert [str(r) for r in results] == ["store down", "store down"]
    source.fail = False
    assert await reads.get("k") == 2  # read again


async def test_expired_entries_are_swept_past_the_bound() -> None:
    source = Source()
    source.gate.set()
    reads = SharedReads(source.fetch, cache_s=0, max_kept=3)
    for n in range(10):
        await reads.get(f"k{n}")
    assert len(reads) <= 3
