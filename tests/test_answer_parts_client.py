"""LLMClient reads a whole answer sent in parts, on a real zoned nats-server with a hand-driven
head and model-proxy: joined in order, bounded by its cap, never handed on cut short, and
asked for only by a client that reads parts (``Sy-Parts-Max``)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from switchyard.bus import headers as h
from switchyard.bus import replies, subjects
from switchyard.bus.parts import send_parts
from switchyard.client import LLMClient
from switchyard.errors import PayloadTooLarge, ProviderError
from switchyard.runtime import reply_wait
from tests.support import flushed
from tests.test_zones import Zone, _as, zone  # noqa: F401  (the fixture, one per module)

pytestmark = pytest.mark.integration

ANSWER = b'{"object":"list","data":[' + b"0.125," * 40_000 + b"0.5]}"  # ~240 KB
ROOM = 24 * 1024  # parts of 24 KiB: ten of them
KEY = "sk-sy-parts"  # a cancel goes out only for a request that names a key (its proof)


async def _answering(
    zone: Zone,  # noqa: F811
    answer: Callable[[NATS, Msg], Awaitable[None]],
    client: Callable[[NATS], LLMClient],
    *,
    cancels: list[Msg] | None = None,
) -> tuple[list[str | None], Callable[[], Awaitable[object]], Callable[[], Awaitable[None]]]:
    """A head that accepts chat requests and a model-proxy that ``answer``s them; the
    ``Sy-Parts-Max`` each request came with; a request as ``client`` sends it; the clean-up."""
    head, _ = await _as(zone, "head")
    proxy, _ = await _as(zone, "modelproxy")
    tail, _ = await _as(zone, "tail")
    announced: list[str | None] = []

    async def on_request(msg: Msg) -> None:
        announced.append((msg.headers or {}).get(h.PARTS_MAX))
        await replies.send_accepted(head, msg.reply)
        await answer(proxy, msg)

    async def on_cancel(msg: Msg) -> None:
        assert cancels is not None
        cancels.append(msg)

    await head.subscribe(subjects.CHAT, queue="head", cb=on_request)
    await flushed(head)
    if cancels is not None:
        await proxy.subscribe(subjects.CANCEL, cb=on_cancel)
        await flushed(proxy)
    llm = client(tail)
    await llm.start()

    async def ask() -> object:
        return (await llm.request(subjects.CHAT, b"{}")).body

    async def close() -> None:
        await llm.close()
        for nc in (head, proxy, tail):
            await nc.close()

    return announced, ask, close


def _reads_parts(nc: NATS) -> LLMClient:
    # (parts are opt-in: off by default; a key, as a request naming none sends no cancel)
    return LLMClient(nc, max_answer_bytes=10**6, api_key=KEY)


async def _in_parts(proxy: NATS, msg: Msg) -> None:
    count = await send_parts(proxy, msg.reply, ANSWER, ROOM, "1.1")
    await replies.send_final(proxy, msg.reply, b"", chunks=count, delivery="1.1")


async def test_a_whole_answer_in_parts_is_joined_whole(zone: Zone) -> None:  # noqa: F811
    """Parts come faster than a consumer takes them, past ``max_unread_bytes``: they are
    bounded by the answer's cap instead (as a stream's chunks, they ended the request with
    ``reader_too_slow``)."""
    announced, ask, close = await _answering(
        zone, _in_parts, lambda nc: LLMClient(nc, max_answer_bytes=10**6, max_unread_bytes=ROOM)
    )
    try:
        assert await ask() == ANSWER
        assert announced == [str(10**6)]
    finally:
        await close()


async def test_parts_past_the_cap_are_a_413(zone: Zone) -> None:  # noqa: F811
    cancels: list[Msg] = []
    _, ask, close = await _answering(
        zone,
        _in_parts,
        lambda nc: LLMClient(nc, max_answer_bytes=100_000, api_key=KEY),
        cancels=cancels,
    )
    try:
        with pytest.raises(PayloadTooLarge) as info:
            await ask()
        assert info.value.code == "answer_too_large"
        for _ in range(50):  # the model-proxy is told to stop sending
            if cancels:
                break
            await asyncio.sleep(0.05)
        assert cancels
    finally:
        await close()


async def test_a_client_that_reads_no_parts_does_not_announce_any(zone: Zone) -> None:  # noqa: F811
    async def small(proxy: NATS, msg: Msg) -> None:
        await replies.send_final(proxy, msg.reply, b"{}")

    announced, ask, close = await _answering(
        zone, small, lambda nc: LLMClient(nc, max_answer_bytes=0)
    )
    try:
        assert await ask() == b"{}"
        assert announced == [None]  # a model-proxy answers it 413 past one message
    finally:
        await close()


async def test_a_client_reads_no_parts_unless_told_to(zone: Zone) -> None:  # noqa: F811
    """Parts are opt-in (no flow control: docs/nats-api.md, "Answers in parts"): a client
    built without ``max_answer_bytes`` announces none, and an answer past one message is
    its 413, as before parts."""

    async def small(proxy: NATS, msg: Msg) -> None:
        await replies.send_final(proxy, msg.reply, b"{}")

    announced, ask, close = await _answering(zone, small, LLMClient)
    try:
        assert await ask() == b"{}"
        assert announced == [None]
    finally:
        await close()


async def test_a_model_proxy_dying_mid_way_is_an_error_and_its_copy_is_cancelled(
    zone: Zone,  # noqa: F811
) -> None:
    """Two parts, then the request's next delivery announces itself (the first model-proxy
    died): the caller cannot take the second copy's parts after the first's, so the request
    ends with an error, and its cancel stops the copy before its provider call."""

    async def dies(proxy: NATS, msg: Msg) -> None:
        for seq in (0, 1):
            await replies.send_part(proxy, msg.reply, seq, b"x" * 10, "1.1")
        await proxy.flush()
        await asyncio.sleep(0.2)
        await replies.announce_delivery(proxy, msg.reply, "1.2")

    cancels: list[Msg] = []
    _, ask, close = await _answering(zone, dies, _reads_parts, cancels=cancels)
    try:
        with pytest.raises(ProviderError) as info:
            await ask()
        assert info.value.code == "stream_interrupted"
        for _ in range(50):
            if cancels:
                break
            await asyncio.sleep(0.05)
        assert cancels
    finally:
        await close()


async def test_a_lost_part_is_an_error_not_a_short_answer(
    zone: Zone,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(reply_wait, "GAP_WAIT_S", 0.5)

    async def loses_one(proxy: NATS, msg: Msg) -> None:
        for seq in (0, 2):  # part 1 lost, and no replay comes
            await replies.send_part(proxy, msg.reply, seq, b"x" * 10, "1.1")
        await replies.send_final(proxy, msg.reply, b"", chunks=3, delivery="1.1")

    _, ask, close = await _answering(zone, loses_one, _reads_parts)
    try:
        with pytest.raises(ProviderError) as info:
            await ask()
        assert info.value.code == "stream_interrupted"
    finally:
        await close()


async def test_a_final_that_does_not_follow_the_parts_is_an_error_not_a_cut_answer(
    zone: Zone,  # noqa: F811
) -> None:
    """Two parts of one delivery, then a final that is not theirs (here: another delivery's
    answer in one message, no ``Sy-Seq``): joined, it was a 200 whose body was those two
    parts alone."""

    async def mixed(proxy: NATS, msg: Msg) -> None:
        for seq in (0, 1):
            await replies.send_part(proxy, msg.reply, seq, b"x" * 10, "1.1")
        await replies.send_final(proxy, msg.reply, b'{"whole": "answer"}')

    _, ask, close = await _answering(zone, mixed, _reads_parts)
    try:
        with pytest.raises(ProviderError) as info:
            await ask()
        assert info.value.code == "stream_interrupted"
    finally:
        await close()
