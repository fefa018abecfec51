"""The runner's sending slots: batches waiting for one take turns, whoever asked first, and a
waiter that gives up passes on what it was handed."""

from __future__ import annotations

import asyncio

from switchyard.workers.batch.slots import FairSlots


async def _hold(slots: FairSlots, batch: str, order: list[str], go: asyncio.Event) -> None:
    async with slots.turn(batch):
        order.append(batch)
        await go.wait()


async def test_waiting_batches_take_turns() -> None:
    slots = FairSlots(1)
    order: list[str] = []
    go = asyncio.Event()
    go.set()
    async with slots.turn("first"):
        # A big batch queues ten lines before a small one queues its one.
        tasks = [asyncio.create_task(_hold(slots, "big", order, go)) for _ in range(10)]
        await asyncio.sleep(0)
        tasks.append(asyncio.create_task(_hold(slots, "small", order, go)))
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    assert order[:3] == ["big", "small", "big"]
    assert slots.free == 1


async def test_a_cancelled_waiter_leaves_its_slot_to_the_others() -> None:
    slots = FairSlots(1)
    order: list[str] = []
    go = asyncio.Event()
    async with slots.turn("first"):
        gone = asyncio.create_task(_hold(slots, "gone", order, go))
        kept = asyncio.create_task(_hold(slots, "kept", order, go))
        await asyncio.sleep(0)
    gone.cancel()  # handed the slot as the holder left, cancelled before it ran
    go.set()
    await asyncio.gather(gone, kept, return_exceptions=True)
    assert order == ["kept"]
    assert slots.free == 1
