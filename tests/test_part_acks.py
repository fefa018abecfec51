"""Flow control of a whole answer's parts, on a real zoned nats-server (docs/nats-api.md,
"Answers in parts"): a caller that acknowledges parts (``Sy-Parts-Ack: 1``) has at most two
unacknowledged at a time, its acknowledgements cross from its zone to the model-proxy's inbox
as answers (``allow_responses``, no other right), and one that stops acknowledging stops the
sending. LLMClient, as the edges and internal clients use it, announces and acknowledges."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from switchyard.bus import headers as h
from switchyard.bus import replies, subjects
from switchyard.bus.part_acks import Stopped, Unacknowledged, send_acked_parts
from switchyard.client import LLMClient
from tests.support import Violations, flushed, until
from tests.test_zones import Zone, _as, zone  # noqa: F401  (the fixture, one per module)

pytestmark = pytest.mark.integration

ANSWER = bytes(range(256)) * 1000  # 256 KB
ROOM = 16 * 1024  # parts of 16 KiB: 16 of them


async def _head_and_proxy(
    zone: Zone,  # noqa: F811
    answer: Callable[[NATS, Msg], Coroutine[Any, Any, None]],
) -> tuple[list[Msg], Callable[[], Awaitable[None]]]:
    """A head that accepts chat requests and a model-proxy (its own identity) that
    ``answer``s them; the requests as they came; the clean-up."""
    head, _ = await _as(zone, "head")
    proxy, _ = await _as(zone, "modelproxy")
    came: list[Msg] = []
    tasks: list[asyncio.Task[None]] = []

    async def on_request(msg: Msg) -> None:
        came.append(msg)
        await replies.send_accepted(head, msg.reply)
        tasks.append(asyncio.create_task(answer(proxy, msg)))

    await head.subscribe(subjects.CHAT, queue="head", cb=on_request)
    await flushed(head)

    async def close() -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for nc in (head, proxy):
            await nc.close()

    return came, close


async def _raw_caller(zone: Zone, name: str) -> tuple[NATS, Violations, list[Msg]]:  # noqa: F811
    """A caller of ``name``'s identity that sends one request and keeps its parts (acking
    none by itself)."""
    nc, violations = await _as(zone, name)
    parts: list[Msg] = []
    inbox = nc.new_inbox()

    async def on_reply(msg: Msg) -> None:
        if (msg.headers or {}).get(h.KIND) == replies.ReplyKind.PART.value:
            parts.append(msg)

    await nc.subscribe(inbox, cb=on_reply)
    await flushed(nc)
    headers = {h.REQUEST_ID: f"acks-{name}", h.PARTS_MAX: "1000000", h.PARTS_ACK: "1"}
    await nc.publish(subjects.CHAT, b"{}", reply=inbox, headers=headers)
    return nc, violations, parts


@pytest.mark.parametrize("caller", ["tail", "app"])  # the CLIENT zone's edges, an INTERNAL client
async def test_a_caller_that_acknowledges_has_at_most_two_parts_unacknowledged(
    zone: Zone,  # noqa: F811
    caller: str,
) -> None:
    sent: list[int] = []

    async def answer(proxy: NATS, msg: Msg) -> None:
        sent.append(await send_acked_parts(proxy, msg.reply, ANSWER, ROOM, "1.1", wait_s=10))

    _, close = await _head_and_proxy(zone, answer)
    nc, violations, parts = await _raw_caller(zone, caller)
    try:
        await until(lambda: len(parts) >= 2)
        await asyncio.sleep(0.3)  # time for more, were they sent
        assert len(parts) == 2, "more than two parts went out unacknowledged"
        acked = 0
        while not sent:  # each acknowledgement lets one more part go out
            if acked < len(parts):
                assert parts[acked].reply, "a part to a caller that acknowledges asks for it"
                await nc.publish(parts[acked].reply, b"")
                acked += 1
            await asyncio.sleep(0.005)
            assert len(parts) - acked <= 2
        assert sent == [len(ANSWER) // ROOM + 1]
        await until(lambda: len(parts) == sent[0])
        assert b"".join(p.data for p in parts) == ANSWER
        assert not violations.errors  # an acknowledgement is an answer: the caller may send it
    finally:
        await nc.close()
        await close()


async def test_a_caller_that_stops_acknowledging_stops_the_sending(zone: Zone) -> None:  # noqa: F811
    gone: list[Unacknowledged] = []

    async def answer(proxy: NATS, msg: Msg) -> None:
        try:
            await send_acked_parts(proxy, msg.reply, ANSWER, ROOM, "1.1", wait_s=0.5)
        except Unacknowledged as exc:
            gone.append(exc)

    _, close = await _head_and_proxy(zone, answer)
    nc, _, parts = await _raw_caller(zone, "tail")
    try:
        await until(lambda: bool(gone))
        assert (gone[0].sent, gone[0].acked) == (2, 0)
        await asyncio.sleep(0.2)
        assert len(parts) == 2  # nothing more was sent
    finally:
        await nc.close()
        await close()


async def test_a_caller_that_acknowledges_too_slowly_is_sent_nothing_past_the_cutoff(
    zone: Zone,  # noqa: F811
) -> None:
    """Each acknowledgement in time (well within ``wait_s``), but too few for the answer to
    go out within ``send_s``: the sending stops at the cutoff (it went on as long as the
    caller kept acknowledging, the window's wait starting again at each one)."""
    gone: list[Unacknowledged] = []

    async def answer(proxy: NATS, msg: Msg) -> None:
        try:
            await send_acked_parts(proxy, msg.reply, ANSWER, ROOM, "1.1", wait_s=5, send_s=1)
        except Unacknowledged as exc:
            gone.append(exc)

    _, close = await _head_and_proxy(zone, answer)
    nc, _, parts = await _raw_caller(zone, "tail")
    began = asyncio.get_running_loop().time()
    try:
        acked = 0
        while not gone:
            if acked < len(parts):
                assert parts[acked].reply
                await nc.publish(parts[acked].reply, b"")
                acked += 1
            await asyncio.sleep(0.3)
        took = asyncio.get_running_loop().time() - began
        assert gone[0].late
        assert 0.9 < took < 2.5
        assert len(parts) < len(ANSWER) // ROOM  # not the whole answer
    finally:
        await nc.close()
        await close()


async def test_a_stopped_sending_ends_at_once(zone: Zone) -> None:  # noqa: F811
    """Told to stop (its caller cancelled) while it waits for an acknowledgement, the
    sending ends then, not when the wait runs out."""
    stop = asyncio.Event()
    ended: list[float] = []

    async def answer(proxy: NATS, msg: Msg) -> None:
        with pytest.raises(Stopped):
            await send_acked_parts(proxy, msg.reply, ANSWER, ROOM, "1.1", wait_s=10, stop=stop)
        ended.append(asyncio.get_running_loop().time())

    _, close = await _head_and_proxy(zone, answer)
    nc, _, parts = await _raw_caller(zone, "tail")
    try:
        await until(lambda: len(parts) == 2)
        await asyncio.sleep(0.2)  # waiting for an acknowledgement now
        stopped = asyncio.get_running_loop().time()
        stop.set()
        await until(lambda: bool(ended))
        assert ended[0] - stopped < 1
        assert len(parts) == 2
    finally:
        await nc.close()
        await close()


async def test_an_acknowledgement_reaches_the_model_proxy_only_as_an_answer(
    zone: Zone,  # noqa: F811
) -> None:
    """The caller's right is ``allow_responses``: the part's own reply subject, once. Sent
    straight to the model-proxy's inbox it is refused (the edges' identity) or lands nowhere
    (an unrestricted user of the CLIENT account: nothing of CORE's inbox is exported), and
    the part stays unacknowledged."""
    gone: list[Unacknowledged] = []
    inboxes: list[str] = []

    async def answer(proxy: NATS, msg: Msg) -> None:
        inboxes.append(proxy.new_inbox().rpartition(".")[0])
        try:
            await send_acked_parts(proxy, msg.reply, ANSWER, ROOM, "1.1", wait_s=1.5)
        except Unacknowledged as exc:
            gone.append(exc)

    _, close = await _head_and_proxy(zone, answer)
    nc, violations, parts = await _raw_caller(zone, "tail")
    probe, _ = await _as(zone, "probe")
    try:
        await until(lambda: len(parts) == 2)
        for n in range(2):
            await nc.publish(f"{inboxes[0]}.x.{n}", b"")  # the model-proxy's inbox, named
            ack = parts[n].reply
            assert ack is not None
            await probe.publish(f"{inboxes[0]}.{ack.rpartition('.')[2]}", b"")
        await nc.flush()
        await until(lambda: bool(gone))
        assert gone[0].acked == 0
        await until(lambda: bool(violations.about(f"{inboxes[0]}.x.0")))
        # Its own answer, sent twice: the second is refused (one answer per request).
        ack = parts[0].reply
        assert ack is not None
        await nc.publish(ack, b"")
        await nc.publish(ack, b"")
        await until(lambda: bool(violations.about(ack)))
    finally:
        await probe.close()
        await nc.close()
        await close()


@pytest.mark.parametrize("caller", ["tail", "app"])
async def test_llm_client_announces_and_acknowledges_parts(
    zone: Zone,  # noqa: F811
    caller: str,
) -> None:
    async def answer(proxy: NATS, msg: Msg) -> None:
        count = await send_acked_parts(proxy, msg.reply, ANSWER, ROOM, "1.1", wait_s=5)
        await replies.send_final(proxy, msg.reply, b"", chunks=count, delivery="1.1")

    came, close = await _head_and_proxy(zone, answer)
    nc, _ = await _as(zone, caller)
    llm = LLMClient(nc, max_answer_bytes=10**6, api_key="sk-sy-acks")
    await llm.start()
    try:
        assert (await llm.request(subjects.CHAT, b"{}")).body == ANSWER
        assert (came[0].headers or {}).get(h.PARTS_ACK) == "1"
    finally:
        await llm.close()
        await nc.close()
        await close()


async def test_llm_client_reading_no_parts_announces_no_acknowledgements(
    zone: Zone,  # noqa: F811
) -> None:
    async def answer(proxy: NATS, msg: Msg) -> None:
        await replies.send_final(proxy, msg.reply, b"{}")

    came, close = await _head_and_proxy(zone, answer)
    nc, _ = await _as(zone, "tail")
    llm = LLMClient(nc, max_answer_bytes=0)
    await llm.start()
    try:
        assert (await llm.request(subjects.CHAT, b"{}")).body == b"{}"
    finally:
        await llm.close()
        await nc.close()
        await close()
    assert h.PARTS_ACK not in (came[0].headers or {})  # nor a Sy-Parts-Max: no parts at all
    assert h.PARTS_MAX not in (came[0].headers or {})
