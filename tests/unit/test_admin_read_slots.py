"""Long reads of the admin plane held open at once, per token role: audit exports (each
copies and encodes up to 100,000 entries on the gateway's loop) and live streams (each asks
the control service once a second). The read-only token could open any number."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from starlette.requests import ClientDisconnect
from starlette.types import Message

from switchyard.admin.audit_export import _lines
from switchyard.admin.read_slots import EXPORT, STREAM, HeldStream, ReadSlots
from switchyard.admin.token import Role
from switchyard.errors import RateLimited

pytestmark = pytest.mark.unit


def test_each_role_holds_at_most_its_slots_and_gives_them_back_once() -> None:
    slots = ReadSlots(exports=2, streams=3)
    held = [slots.hold(EXPORT, Role.READ_ONLY) for _ in range(2)]
    with pytest.raises(RateLimited) as refused:
        slots.hold(EXPORT, Role.READ_ONLY)
    assert refused.value.status == 429
    assert refused.value.code == "too_many_concurrent_requests"
    assert refused.value.retry_after is not None
    assert "read-only admin token" in refused.value.message
    slots.hold(EXPORT, Role.ADMIN)  # the admin token's are counted apart
    slots.hold(STREAM, Role.READ_ONLY)  # and streams apart from exports
    held[0]()
    held[0]()  # once, however often
    assert slots.held(EXPORT, Role.READ_ONLY) == 1
    slots.hold(EXPORT, Role.READ_ONLY)


def _scope() -> dict[str, object]:
    return {
        "type": "http",
        "method": "GET",
        "path": "/",
        "headers": [],
        "asgi": {"spec_version": "2.4"},
    }


async def _chunks(n: int) -> AsyncIterator[bytes]:
    for _ in range(n):
        yield b"x"
        await asyncio.sleep(0)


def test_a_held_stream_gives_its_slot_back_when_it_ends_or_the_client_goes() -> None:
    slots = ReadSlots(exports=1)

    async def serve(fail_after: int | None) -> None:
        sent: list[Message] = []

        async def receive() -> Message:
            await asyncio.sleep(3600)  # the client says nothing (no disconnect message)
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            if fail_after is not None and len(sent) >= fail_after:
                raise OSError("the client went away")
            sent.append(message)

        response = HeldStream(
            _chunks(5), slots.hold(EXPORT, Role.READ_ONLY), media_type="text/plain"
        )
        with contextlib.suppress(OSError, ClientDisconnect):
            await response(_scope(), receive, send)

    asyncio.run(serve(None))
    assert slots.held(EXPORT, Role.READ_ONLY) == 0
    asyncio.run(serve(2))
    assert slots.held(EXPORT, Role.READ_ONLY) == 0


def test_an_export_yields_to_the_loop_between_chunks() -> None:
    """It encoded every row without giving the loop back: other requests waited for all."""
    ran: list[int] = []

    async def export() -> None:
        async def other() -> None:
            for i in range(3):
                ran.append(i)
                await asyncio.sleep(0)

        task = asyncio.create_task(other())
        rows = iter([_Row()] * 2_000)  # four chunks of 500
        chunks = 0
        async for _ in _lines(rows):  # type: ignore[arg-type]
            chunks += 1
            if chunks == 2:
                assert ran, "no other task ran between the first chunks"
        await task

    asyncio.run(export())


class _Row:
    def doc(self) -> dict[str, int]:
        return {"seq": 1}


async def _forever() -> AsyncIterator[bytes]:
    while True:
        yield b"event: overview\ndata: {}\n\n"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("spec", ["2.3", "2.4"])  # (uvicorn's httptools says 2.3)
def test_a_live_stream_whose_client_reads_nothing_gives_its_slot_back(spec: str) -> None:
    """A closed laptop's half-open connection: the write blocks once the buffers are full,
    and the slot was held until TCP gave up (~15 minutes). Now it is back within the send
    timeout, nothing more is sent, and the answer ends once the blocked write is done."""
    slots = ReadSlots(streams=1)

    async def serve() -> list[Message]:
        sent: list[Message] = []
        unblocked = asyncio.Event()

        async def receive() -> Message:
            await asyncio.sleep(3600)
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            if len(sent) == 3:  # the buffers are full: the write waits for the client
                await unblocked.wait()
            sent.append(message)

        response = HeldStream(
            _forever(),
            slots.hold(STREAM, Role.ADMIN),
            media_type="text/event-stream",
            send_timeout_s=0.2,
        )
        task = asyncio.create_task(
            response({**_scope(), "asgi": {"spec_version": spec}}, receive, send)
        )
        await asyncio.sleep(0.5)
        assert slots.held(STREAM, Role.ADMIN) == 0  # back while the write still waits
        slots.hold(STREAM, Role.ADMIN)()  # (the page, woken, opens a new stream)
        assert not task.done()
        unblocked.set()
        await asyncio.wait_for(task, 2)
        return sent

    sent = asyncio.run(serve())
    assert slots.held(STREAM, Role.ADMIN) == 0
    assert len(sent) == 5  # the start, two events, the blocked one, then the end
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}


def test_a_live_stream_read_in_time_keeps_its_slot() -> None:
    slots = ReadSlots(streams=1)

    async def serve() -> None:
        async def receive() -> Message:
            await asyncio.sleep(3600)
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            await asyncio.sleep(0.01)

        response = HeldStream(
            _forever(),
            slots.hold(STREAM, Role.ADMIN),
            media_type="text/event-stream",
            send_timeout_s=0.2,
        )
        task = asyncio.create_task(response(_scope(), receive, send))
        await asyncio.sleep(0.6)
        assert slots.held(STREAM, Role.ADMIN) == 1
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(serve())
    assert slots.held(STREAM, Role.ADMIN) == 0
