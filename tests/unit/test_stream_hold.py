"""What a chat stream's held opening does to its caller's keep-alives, and how long it is held
(:mod:`switchyard.workers.modelproxy.stream_watch`): held chunks are no message to the caller,
so they do not hold its keep-alives back; past the bound they are sent and holding ends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from nats.aio.msg import Msg

from switchyard.bus.envelope import Envelope
from switchyard.schemas.openai import Usage
from switchyard.workers.modelproxy.heartbeat import InFlight
from switchyard.workers.modelproxy.job import Job
from switchyard.workers.modelproxy.key_echo import EchoedKeys
from switchyard.workers.modelproxy.providers.base import StreamEvent
from switchyard.workers.modelproxy.stream_watch import BEGUN_AFTER_S, HELD_CHUNKS, relay

pytestmark = pytest.mark.unit

EMPTY = b'{"choices": [{"index": 0, "delta": {"content": ""}}]}'
TEXT = b'{"choices": [{"index": 0, "delta": {"content": "hi"}}]}'


def _job() -> Job:
    env = Envelope(request_id="r1", op="chat", stream=True)
    msg = Msg(
        _client=None,  # type: ignore[arg-type]
        subject="llm.v1.dispatch.d",
        reply="$JS.ACK.DISPATCH.c.1.7.7.1700000000000000000.0",
        data=b"{}",
        headers=env.encode(),
    )
    return Job(msg=msg, env=env, deployment_id="d", inflight=InFlight("r", msg, 0.0, 0.0))


async def _relayed(payloads: list[bytes], job: Job) -> list[tuple[int, bytes, float]]:
    """What went to the caller: (seq, chunk, the caller's last-sent time when it went)."""
    sent: list[tuple[int, bytes, float]] = []

    async def send(j: Job, seq: int, payload: bytes) -> None:
        sent.append((seq, payload, j.inflight.last_sent))

    async def events() -> AsyncIterator[StreamEvent]:
        for payload in payloads:
            assert job.inflight.last_sent == 0.0 or sent, "a held chunk counted as sent"
            yield StreamEvent(payload)

    await relay(job, events(), send, echoed=EchoedKeys(), key=b"", provider="p")
    return sent


async def test_held_chunks_do_not_count_as_sent_to_the_caller() -> None:
    job = _job()
    sent = await _relayed([EMPTY, EMPTY, EMPTY, TEXT], job)
    assert [s[0] for s in sent] == [0, 1, 2, 3]
    assert sent[0][2] == 0.0  # nothing had gone to the caller before the first send
    assert job.inflight.last_sent > 0.0
    assert job.sent


async def test_a_long_hold_is_sent_at_its_bound_and_then_streams() -> None:
    job = _job()
    sent = await _relayed([EMPTY] * (HELD_CHUNKS + 5) + [TEXT], job)
    assert len(sent) == HELD_CHUNKS + 6
    assert job.ttft is not None  # measured at the content, after the bound


async def test_the_bound_ends_a_hold_before_the_stream_does() -> None:
    """A stream of empty deltas past the bound: its chunks go out as they come, not at its end."""
    job = _job()
    seen: list[int] = []

    async def send(j: Job, seq: int, payload: bytes) -> None:
        seen.append(seq)

    async def events() -> AsyncIterator[StreamEvent]:
        for i in range(HELD_CHUNKS + 10):
            if i == HELD_CHUNKS + 5:
                assert seen, "still holding past the bound"
            yield StreamEvent(EMPTY)

    await relay(job, events(), send, echoed=EchoedKeys(), key=b"", provider="p")
    assert len(seen) == HELD_CHUNKS + 10


async def _begun_at(
    events: list[StreamEvent | float], op: str = "chat", *, after: float = 0.0
) -> list[int]:
    """When the caller heard that the provider began: the chunks sent before each time. A
    number in ``events`` is a pause of that many seconds; ``after``: a pause at the end."""
    job = _job()
    job.env = Envelope(request_id="r1", op=op, stream=True)
    sent: list[bytes] = []
    heard: list[int] = []

    async def send(j: Job, seq: int, payload: bytes) -> None:
        sent.append(payload)

    async def begun(j: Job) -> None:
        heard.append(len(sent))

    async def stream() -> AsyncIterator[StreamEvent]:
        for event in events:
            if isinstance(event, float):
                await asyncio.sleep(event)
            else:
                yield event

    await relay(job, stream(), send, echoed=EchoedKeys(), key=b"", provider="p", begun=begun)
    await asyncio.sleep(after)
    return heard


async def test_a_held_opening_tells_the_caller_once_that_the_provider_began() -> None:
    """Before anything is sent, once: an edge may then start an SDK's stream whose wait for
    the headers runs out (``X-Stainless-Timeout``) rather than answer 504."""
    late = BEGUN_AFTER_S + 0.2
    assert await _begun_at([StreamEvent(EMPTY), StreamEvent(EMPTY), late, StreamEvent(TEXT)]) == [0]
    assert await _begun_at([StreamEvent(TEXT), StreamEvent(EMPTY)]) == []  # content at once


async def test_an_opening_followed_quickly_by_content_costs_no_message_more() -> None:
    """Most providers send content within milliseconds of their role chunk: the begun
    keep-alive went out on every held stream, a bus message more per stream for the rare
    slow one. Now only an opening held :data:`BEGUN_AFTER_S` is said."""
    events: list[StreamEvent | float] = [StreamEvent(EMPTY), 0.01, StreamEvent(TEXT)]
    assert await _begun_at(events, after=BEGUN_AFTER_S + 0.1) == []
    # A stream that ends with nothing but its opening, quickly: not said either.
    assert await _begun_at([StreamEvent(EMPTY)], after=BEGUN_AFTER_S + 0.1) == []


async def test_an_adapter_holding_its_own_opening_says_so_with_an_empty_event() -> None:
    """A native or translated stream (not held here): its adapter's empty event, once; an
    event of usage alone is no such sign."""
    usage = StreamEvent(None, Usage(prompt_tokens=1, completion_tokens=0, total_tokens=1))
    late = BEGUN_AFTER_S + 0.2
    events: list[StreamEvent | float] = [
        usage,
        StreamEvent(None),
        StreamEvent(None),
        late,
        StreamEvent(TEXT),
    ]
    assert await _begun_at(events, op="messages") == [0]
    assert await _begun_at([StreamEvent(TEXT), StreamEvent(None)], op="messages") == []


async def test_a_failed_begun_keep_alive_hides_neither_the_providers_error_nor_comes_late() -> None:
    """The begun publish is best effort: when it failed (a reconnect's full buffer), its
    error replaced the provider's own in flight, and the head never rerouted the request. And
    a stream that ends with its opening alone sends nothing after the begun."""
    job = _job()
    order: list[str] = []

    async def send(j: Job, seq: int, payload: bytes) -> None:
        order.append("chunk")
        await asyncio.sleep(0)

    async def failing_begun(j: Job) -> None:
        order.append("begun")
        raise ConnectionError("the reply connection is reconnecting")

    async def failing_stream() -> AsyncIterator[StreamEvent]:
        yield StreamEvent(EMPTY)
        await asyncio.sleep(BEGUN_AFTER_S + 0.1)
        raise RuntimeError("the provider's own error")

    with pytest.raises(RuntimeError, match="provider's own"):
        await relay(
            job,
            failing_stream(),
            send,
            echoed=EchoedKeys(),
            key=b"",
            provider="p",
            begun=failing_begun,
        )
    assert order == ["begun"]

    async def opening_only() -> AsyncIterator[StreamEvent]:
        yield StreamEvent(EMPTY)
        await asyncio.sleep(BEGUN_AFTER_S + 0.1)

    order.clear()

    async def begun(j: Job) -> None:
        order.append("begun")

    await relay(
        _job(), opening_only(), send, echoed=EchoedKeys(), key=b"", provider="p", begun=begun
    )
    await asyncio.sleep(BEGUN_AFTER_S)
    assert order == ["begun", "chunk"]
