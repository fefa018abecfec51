"""A batch line's budget check holds none of the runner's sending slots.

The slots are shared by every batch; a budget read that Valkey is slow to answer (blackholed,
each read waits ``redis.timeout_s``) must not keep one busy. And a line that passed its check
before waiting for a slot is still not sent once another line of its batch found the budget
spent meanwhile. Real :class:`FairSlots`; the budget reader and the bus client are the test's.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any, cast

from switchyard.bus.envelope import Envelope
from switchyard.config import BatchSettings
from switchyard.errors import RateLimited
from switchyard.schemas import batches as b
from switchyard.workers.batch.job import Job
from switchyard.workers.batch.slots import FairSlots

RECORD = b.BatchRecord(
    batch=b.Batch(
        id="batch_slow_budget",
        endpoint="/v1/chat/completions",
        input_file_id="file-x",
        completion_window="24h",
        status="in_progress",
        created_at=0,
    ),
    owner="o",
    key_id="k",
    key_hash="h",
)
LINE = b.BatchLine(
    custom_id="r1",
    method="POST",
    url="/v1/chat/completions",
    body={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
)
SPENT = RateLimited(
    "this key's budget is used up",
    code="budget_exceeded",
    type="insufficient_quota",
    limit="budget",
)


@dataclass
class _Reply:
    body: bytes


class Bus:
    """Stands for the bus client: answers every line at once, and says which were sent."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def request(self, subject: str, body: bytes, env: Envelope, **_: Any) -> _Reply:
        self.sent.append(env.request_id)
        return _Reply(b'{"ok": true}')


def _job(slots: FairSlots, bus: Bus, budget: Any) -> Job:
    return Job(
        RECORD,
        cast(Any, None),  # never read: the test sends the lines itself
        2,
        store=cast(Any, None),
        llm=cast(Any, bus),
        settings=BatchSettings(),
        slots=slots,
        cancelled=lambda: False,
        on_line=lambda ok: None,
        budget=budget,
    )


async def test_a_line_waiting_on_a_slow_budget_read_holds_no_slot() -> None:
    slots = FairSlots(1)
    bus = Bus()
    reading, answer = asyncio.Event(), asyncio.Event()

    async def slow_budget(key_hash: str, model: str = "") -> RateLimited | None:
        reading.set()
        await answer.wait()  # Valkey does not answer (yet)
        return None

    line = asyncio.create_task(_job(slots, bus, slow_budget)._send(1, LINE))
    try:
        await asyncio.wait_for(reading.wait(), 5)
        assert slots.free == 1  # the read is under way and the only slot is still free
        # Another batch's line gets the slot at once, while the read goes on.
        async with asyncio.timeout(5), slots.turn("batch_other"):
            assert not line.done()
        answer.set()
        assert await asyncio.wait_for(line, 5) == (200, b'{"ok": true}')
    finally:
        line.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await line
    assert bus.sent == ["batch_slow_budget:1"]
    assert slots.free == 1


async def test_a_line_that_waited_for_a_slot_is_not_sent_past_a_budget_found_spent() -> None:
    """Line 1 passes its check and waits for the slot another batch holds; line 2's check
    then finds the budget spent. When the slot frees, line 1 ends with the same refusal
    instead of being sent."""
    slots = FairSlots(1)
    bus = Bus()
    answers: list[RateLimited | None] = [None, SPENT]
    checks: list[str] = []

    async def budget(key_hash: str, model: str = "") -> RateLimited | None:
        checks.append(key_hash)
        return answers.pop(0)

    job = _job(slots, bus, budget)
    async with contextlib.AsyncExitStack() as held:
        await held.enter_async_context(slots.turn("batch_other"))
        first = asyncio.create_task(job._send(1, LINE))
        async with asyncio.timeout(5):  # (only a regression waits: the check is immediate)
            while not checks:  # checked, and then queued for the slot in the same step
                await asyncio.sleep(0)
        second = await asyncio.wait_for(job._send(2, LINE), 5)
        assert second is not None
        assert second[0] == 429
        assert not first.done()
    waited = await asyncio.wait_for(first, 5)
    assert waited is not None
    assert waited == second  # the same error row, not sent
    assert bus.sent == []
    assert slots.free == 1
