"""LLMClient against a real zoned nats-server with a hand-driven head.

Runs against its own nats-server (the zone fixture is module-scoped), which one test restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from switchyard.bus import headers as h
from switchyard.bus import replies
from switchyard.client import LLMClient
from switchyard.errors import DeadlineExceeded, InvalidRequest, ServiceUnavailable
from tests.support import flushed
from tests.test_zones import Zone, _as, zone  # noqa: F401  (the fixture, one per module)

pytestmark = pytest.mark.integration


async def _serve(head: NATS, body: bytes) -> None:
    """Make ``head`` a head that accepts every chat request and answers it with ``body``."""

    async def on_request(msg: Msg) -> None:
        await replies.send_accepted(head, msg.reply)
        await replies.send_final(head, msg.reply, body)

    await head.subscribe("llm.v1.chat", queue="head", cb=on_request)
    await flushed(head)


async def test_request_releases_its_reply_slot_when_it_returns(zone: Zone) -> None:  # noqa: F811
    head, _ = await _as(zone, "head")
    tail, _ = await _as(zone, "tail")
    await _serve(head, b"{}")
    client = LLMClient(tail)
    await client.start()
    try:
        for _ in range(3):
            await client.request("llm.v1.chat", b"{}")
            # Released on return, not whenever the garbage collector closes the generator.
            assert client._pending == {}
    finally:
        await client.close()
        for nc in (head, tail):
            await nc.close()


async def test_accepted_request_is_resent_after_a_reconnect(zone: Zone) -> None:  # noqa: F811
    """The reply path of an accepted request dies with the connection: the client must
    notice on its own and send the request again."""
    head, _ = await _as(zone, "head")
    tail, _ = await _as(zone, "tail")
    attempts: list[str] = []
    first_accepted = asyncio.Event()

    async def on_request(msg: Msg) -> None:
        attempts.append((msg.headers or {}).get(h.ATTEMPT, ""))
        await replies.send_accepted(head, msg.reply)
        if len(attempts) == 1:
            first_accepted.set()  # and never answer: this reply path is about to die
            return
        await replies.send_final(head, msg.reply, b'{"answer":42}')

    await head.subscribe("llm.v1.chat", queue="head", cb=on_request)
    await flushed(head)
    # Accept timeout and deadline far beyond the test's own bound: only noticing the
    # reconnect can get this request answered in time.
    client = LLMClient(tail, accept_timeout=300, default_timeout=300)
    await client.start()
    try:
        request = asyncio.create_task(client.request("llm.v1.chat", b"{}"))
        await asyncio.wait_for(first_accepted.wait(), 10)
        await zone.server.stop(5)
        await zone.server.start()
        assert await zone.server.wait_healthy(30), zone.server.tail_log()
        reply = await asyncio.wait_for(request, 30)
        assert reply.body == b'{"answer":42}'
        # The accepted attempt, then the one sent after the reconnect. The first may be a
        # later one: an attempt sent before the head's interest crossed into the client's
        # account meets "no responders" and is sent again at once (a CI run saw ['2', '3']).
        assert len(attempts) == 2
        assert int(attempts[1]) == int(attempts[0]) + 1
    finally:
        await client.close()
        for nc in (head, tail):
            await nc.close()


async def test_no_head_just_after_a_reconnect_is_retried_while_the_cluster_settles(
    zone: Zone,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Right after the client's own reconnect, heads may still be reconnecting: "no
    responders" then is retried for a moment (SETTLING_S) instead of failing at once, which a
    failover run saw as a 503 no_workers. The connection logs its loss and its return, with
    the server, so a failover can be read from the logs."""
    caplog.set_level(logging.WARNING, logger="switchyard.bus")
    tail, _ = await _as(zone, "tail")
    client = LLMClient(tail, default_timeout=30)
    await client.start()
    head = None
    try:
        before = tail.stats["reconnects"]
        await zone.server.stop(5)
        await zone.server.start()
        assert await zone.server.wait_healthy(30), zone.server.tail_log()
        for _ in range(400):
            if tail.stats["reconnects"] > before and tail.is_connected:
                break
            await asyncio.sleep(0.05)
        assert tail.is_connected
        server = zone.servers[0].split("://", 1)[1]

        def connection_events() -> list[str]:
            return [
                r.getMessage()
                for r in caplog.records
                if "NATS at" in r.getMessage() or "NATS connection" in r.getMessage()
            ]

        # The reconnected callback logs a moment after the client says it is connected (a
        # loaded machine once read the list between the two).
        for _ in range(100):
            if len(connection_events()) >= 2:
                break
            await asyncio.sleep(0.05)
        events = connection_events()
        assert events == [
            f"tail lost its NATS connection to {server}; reconnecting",
            f"tail reconnected to NATS at {server}",
        ]
        request = asyncio.create_task(client.request("llm.v1.chat", b"{}"))
        await asyncio.sleep(1.5)  # longer than the usual attempts take with no head at all
        assert not request.done(), request.exception()
        head, _ = await _as(zone, "head")
        await _serve(head, b'{"late":"head"}')
        reply = await asyncio.wait_for(request, 10)
        assert reply.body == b'{"late":"head"}'
    finally:
        await client.close()
        for nc in (tail, head):
            if nc is not None:
                await nc.close()


async def test_no_head_just_after_one_answered_is_retried_while_heads_come_back(
    zone: Zone,  # noqa: F811
) -> None:
    """When the heads' NATS node dies, every head is gone for the second they take to
    reconnect, while this client's own connection is fine: a client a head answered moments
    ago retries "no responders" for a while (a failover run saw a 503 no_workers here)."""
    tail, _ = await _as(zone, "tail")
    first, _ = await _as(zone, "head")
    await _serve(first, b'{"n":1}')
    client = LLMClient(tail, default_timeout=30)
    await client.start()
    second = None
    try:
        assert (await client.request("llm.v1.chat", b"{}")).body == b'{"n":1}'
        await first.close()  # the only head is gone
        request = asyncio.create_task(client.request("llm.v1.chat", b"{}"))
        await asyncio.sleep(1.5)  # far longer than the usual attempts take
        assert not request.done(), request.exception()
        second, _ = await _as(zone, "head")
        await _serve(second, b'{"n":2}')
        assert (await asyncio.wait_for(request, 10)).body == b'{"n":2}'
    finally:
        await client.close()
        for nc in (tail, first, second):
            if nc is not None and not nc.is_closed:
                await nc.close()


async def _split_answer(zone: Zone, *, end_first_copy: bool) -> list[tuple[str, int]]:  # noqa: F811
    """What a caller receives of a streamed answer whose first copy lost its start (chunk 0
    died with a NATS node) while its end got through, followed by the whole answer again (the
    model-proxy's replay); the first copy with or without its terminator."""
    head, _ = await _as(zone, "head")
    proxy, _ = await _as(zone, "modelproxy")
    tail, _ = await _as(zone, "tail")

    async def on_request(msg: Msg) -> None:
        await replies.send_accepted(head, msg.reply)
        await replies.send_chunk(proxy, msg.reply, 1, b'{"n":1}', "1.1")
        await replies.send_final(proxy, msg.reply, b"", chunks=2, end=end_first_copy)
        await proxy.flush()
        for seq in (0, 1):
            await replies.send_chunk(proxy, msg.reply, seq, b'{"n":%d}' % seq, "1.1")
        await replies.send_final(proxy, msg.reply, b"", chunks=2)

    await head.subscribe("llm.v1.chat", queue="head", cb=on_request)
    await flushed(head)
    client = LLMClient(tail, default_timeout=30)
    await client.start()
    got: list[tuple[str, int]] = []
    try:

        async def read() -> None:
            async for reply in client.exchange("llm.v1.chat", b"{}"):
                got.append((reply.kind.value, reply.seq))

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(read(), 3)  # a gap is waited on for 12 s: cut it short
    finally:
        await client.close()
        for nc in (head, proxy, tail):
            await nc.close()
    return got


async def test_a_replay_reaches_the_caller_after_a_first_copy_without_its_terminator(
    zone: Zone,  # noqa: F811
) -> None:
    """The model-proxy leaves the terminator off an answer sent across a reconnect, and the
    replay that follows fills the gap at once."""
    got = await _split_answer(zone, end_first_copy=False)
    assert got == [("chunk", 0), ("chunk", 1), ("final", 2)]


async def test_a_terminator_closes_the_reply_path_for_the_replay(zone: Zone) -> None:  # noqa: F811
    """Why: NATS drops everything sent to a reply path after its terminator. With it on the
    first copy (as before), the replay never arrives: the caller waits out the gap (12 s) and
    sends the request again."""
    assert await _split_answer(zone, end_first_copy=True) == []


async def test_chat_refuses_a_body_that_asks_for_a_stream(zone: Zone) -> None:  # noqa: F811
    """An explorer's find: `chat({..., "stream": True})` failed with msgspec's "Input data was
    truncated" (the streamed answer's empty final read as the document). Refused before
    anything is sent, pointing at chat_stream()."""
    head, _ = await _as(zone, "head")
    tail, _ = await _as(zone, "tail")
    await _serve(head, b"{}")
    client = LLMClient(tail)
    await client.start()
    try:
        with pytest.raises(InvalidRequest, match="chat_stream") as info:
            await client.chat({"model": "m", "messages": [], "stream": True})
        assert info.value.param == "stream"
        assert await client.chat({"model": "m", "messages": [], "stream": False}) == {}
    finally:
        await client.close()
        for nc in (head, tail):
            await nc.close()


async def test_a_client_cut_off_from_nats_says_so(zone: Zone) -> None:  # noqa: F811
    """An edge whose own NATS connection is down (its certificate expired at a reconnect, a
    network split) answered every request, after its attempts, 'no head accepted the
    request': an operator looked at healthy heads. The answer names the lost connection."""
    tail, _ = await _as(zone, "tail")
    client = LLMClient(tail, accept_timeout=0.3, attempts=2, default_timeout=30)
    await client.start()

    async def until(connected: bool) -> bool:
        for _ in range(300):
            if client.connected is connected:
                return True
            await asyncio.sleep(0.05)
        return False

    try:
        assert await until(connected=True)
        await zone.server.stop(5)
        assert await until(connected=False)
        with pytest.raises(ServiceUnavailable) as refused:
            await asyncio.wait_for(client.request("llm.v1.chat", b"{}"), 20)
        assert refused.value.code == "no_workers"
        assert "this process is not connected to NATS" in refused.value.message
    finally:
        await zone.server.start()
        assert await zone.server.wait_healthy(30), zone.server.tail_log()
        await until(connected=True)  # nats-py cannot close while its transport is gone
        await client.close()
        await tail.close()


async def test_a_deadline_504_names_the_latest_placement_though_an_earlier_comes_last(
    zone: Zone,  # noqa: F811
) -> None:
    """A reroute's ``accepted`` (another head's) can reach the caller before the first
    placement's: each head sends its own, and nothing orders one head's messages against
    another's. The 504 named whichever came last, the deployment that had already failed;
    it names the one the request was queued for last (``Sy-Placement``), and an older head's
    ``accepted`` (none) is taken as it comes."""
    head, _ = await _as(zone, "head")
    tail, _ = await _as(zone, "tail")

    def accepted(deployment: str, placement: int) -> dict[str, str]:
        named = {**replies.ACCEPTED_HEADERS, h.DEPLOYMENT: deployment}
        return named | ({"Sy-Placement": str(placement)} if placement else {})

    async def on_request(msg: Msg) -> None:  # queued at b after a failed at a: never answered
        placements = {b"late": [("b", 2), ("a", 1)], b"old": [("b", 0), ("a", 0)]}[msg.data]
        for deployment, placement in placements:
            await head.publish(msg.reply, b"", headers=accepted(deployment, placement))

    await head.subscribe("llm.v1.chat", queue="head", cb=on_request)
    await flushed(head)
    client = LLMClient(tail, default_timeout=1)
    await client.start()
    try:
        with pytest.raises(DeadlineExceeded) as late:
            await asyncio.wait_for(client.request("llm.v1.chat", b"late"), 20)
        assert dict(late.value.headers)[b"x-switchyard-deployment"] == b"b"
        with pytest.raises(DeadlineExceeded) as old:
            await asyncio.wait_for(client.request("llm.v1.chat", b"old"), 20)
        assert dict(old.value.headers)[b"x-switchyard-deployment"] == b"a"
    finally:
        await client.close()
        for nc in (head, tail):
            await nc.close()


async def test_a_reroute_tells_a_keep_alive_watcher_no_provider_works_now(
    zone: Zone,  # noqa: F811
) -> None:
    """The batch runner tells a working provider from a busy queue by keep-alives; the
    ``MOVED`` keep-alive a reroute's ``accepted`` makes counted as one more "working", so a
    cancelled batch skipped its rerouted (queued) lines and they ran, billed (a review)."""
    head, _ = await _as(zone, "head")
    tail, _ = await _as(zone, "tail")

    def accepted(deployment: str, placement: int) -> dict[str, str]:
        return {
            **replies.ACCEPTED_HEADERS,
            h.DEPLOYMENT: deployment,
            "Sy-Placement": str(placement),
        }

    async def on_request(msg: Msg) -> None:  # a works, fails; the request moves to b's queue
        await head.publish(msg.reply, b"", headers=accepted("a", 1))
        await head.publish(msg.reply, b"", headers={h.KIND: "keepalive"})
        await head.publish(msg.reply, b"", headers=accepted("b", 2))
        await replies.send_final(head, msg.reply, b"{}")

    await head.subscribe("llm.v1.chat", queue="head", cb=on_request)
    await flushed(head)
    client = LLMClient(tail, default_timeout=5)
    await client.start()
    seen: list[str] = []
    try:
        await asyncio.wait_for(
            client.request(
                "llm.v1.chat",
                b"x",
                on_keepalive=lambda: seen.append("working"),
                on_moved=lambda: seen.append("moved"),
            ),
            20,
        )
        assert seen == ["working", "moved"]
    finally:
        await client.close()
        for nc in (head, tail):
            await nc.close()


async def test_a_late_keep_alive_of_the_placement_moved_from_is_not_work(
    zone: Zone,  # noqa: F811
) -> None:
    """A keep-alive (or ``Sy-Begun``) of the placement a reroute moved the request from that
    comes after the reroute's ``accepted`` marked the line as worked on again; one of the next
    placement that comes before its ``accepted`` tells the move (and is work), and that
    ``accepted`` then tells nothing more. Keep-alives name their placement (``Sy-Placement``)."""
    head, _ = await _as(zone, "head")
    tail, _ = await _as(zone, "tail")

    def accepted(deployment: str, placement: int) -> dict[str, str]:
        return {**replies.ACCEPTED_HEADERS, h.DEPLOYMENT: deployment, h.PLACEMENT: str(placement)}

    async def on_request(msg: Msg) -> None:
        await head.publish(msg.reply, b"", headers=accepted("a", 1))
        await replies.send_keepalive(head, msg.reply, 1)
        if msg.data == b"late":  # a fails; the request moves to b's queue; a's come late
            await head.publish(msg.reply, b"", headers=accepted("b", 2))
            await replies.send_keepalive(head, msg.reply, 1)
            await replies.send_begun(head, msg.reply, "1.1", 1)
        else:  # b's begun before its accepted
            await replies.send_begun(head, msg.reply, "1.1", 2)
            await head.publish(msg.reply, b"", headers=accepted("b", 2))
        await replies.send_final(head, msg.reply, b"{}")

    await head.subscribe("llm.v1.chat", queue="head", cb=on_request)
    await flushed(head)
    client = LLMClient(tail, default_timeout=5)
    await client.start()
    seen: list[str] = []
    try:
        for body, expected in (
            (b"late", ["working", "moved"]),
            (b"ahead", ["working", "moved", "working"]),
        ):
            seen.clear()
            await asyncio.wait_for(
                client.request(
                    "llm.v1.chat",
                    body,
                    on_keepalive=lambda: seen.append("working"),
                    on_moved=lambda: seen.append("moved"),
                ),
                20,
            )
            assert seen == expected, body
    finally:
        await client.close()
        for nc in (head, tail):
            await nc.close()
