"""The end the edge writes to a Responses stream that fails after it began, and what the edge
makes of the timeouts an SDK announces (pure logic)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from switchyard.bus.replies import Reply, ReplyKind
from switchyard.dialects.responses.failed import last_sequence, opening_response, stream_failed
from switchyard.errors import DeadlineExceeded
from switchyard.ingress.edge import FinalReply, stream_error
from switchyard.ingress.timeouts import SDK_GRACE_S, deadline_header, first_chunk_wait, first_reply

OPENING = (
    b'event: response.created\ndata: {"type":"response.created","response":{"id":"resp_1",'
    b'"object":"response","status":"in_progress","output":[]},"sequence_number":0}\n\n'
    b'event: response.in_progress\ndata: {"type":"response.in_progress","response":{"id":'
    b'"resp_1","object":"response","status":"in_progress","output":[]},"sequence_number":1}\n\n'
)


def _events(stream: bytes) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for block in stream.decode().split("\n\n"):
        if not block:
            continue
        event, data = block.split("\n")
        out.append((event.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return out


def test_the_last_sequence_number_of_relayed_events() -> None:
    delta = b'event: d\ndata: {"type":"d","delta":"\\"sequence_number\\": 99","sequence_number":7}'
    assert last_sequence(OPENING) == 1
    assert last_sequence(delta) == 7  # a quoted one inside the text is not the event's
    native = b'data: {"type":"d","sequence_number" : 12,"delta":"x"}\n\n'
    assert last_sequence(native) == 12  # OpenAI puts it anywhere in the object
    assert last_sequence(b"event: d\ndata: {}\n\n") is None


def test_a_failed_stream_ends_with_error_then_response_failed_numbered_on() -> None:
    exc = DeadlineExceeded("the request deadline passed")
    relayed = b'event: response.output_text.delta\ndata: {"type":"x","sequence_number":6}\n\n'
    (kind, error), (last, failed) = _events(stream_error(exc, "responses", _final(relayed)))
    assert (kind, error["type"], error["code"]) == ("error", "error", "deadline_exceeded")
    assert error["sequence_number"] == 7
    assert (last, failed["type"], failed["sequence_number"]) == ("response.failed",) * 2 + (8,)
    response = failed["response"]
    assert (response["id"], response["status"]) == ("resp_1", "failed")
    assert response["error"]["message"] == "the request deadline passed"


def test_a_stream_that_relayed_nothing_is_opened_before_it_fails() -> None:
    """An edge that started a stream before its first chunk (``stream_start_s``) and then
    failed it relayed no event: OpenAI's SDK stream helper raises RuntimeError on an
    ``error`` no ``response.created`` came before, so the edge opens a Response of its own
    (for the model asked for) and fails that one."""
    ended = stream_failed(DeadlineExceeded("late"), b"", b"", model="gpt-x")
    (kind, created), (_, error), (_, failed) = _events(ended)
    assert kind == "response.created"
    assert [e["sequence_number"] for e in (created, error, failed)] == [0, 1, 2]
    opened = created["response"]
    assert opened["id"].startswith("resp_")
    assert (opened["status"], opened["model"], opened["object"]) == (
        "in_progress",
        "gpt-x",
        "response",
    )
    assert isinstance(opened["created_at"], int)
    assert failed["response"]["id"] == opened["id"]
    assert failed["response"]["status"] == "failed"
    assert opening_response(b"event: x\ndata: not json\n\n") is None


def test_a_stream_that_already_ended_gets_nothing_more() -> None:
    ended = b'event: response.failed\ndata: {"type":"response.failed","sequence_number":9}\n\n'
    assert stream_failed(DeadlineExceeded("late"), OPENING, ended) == b""


def test_anthropics_stream_error_is_an_error_event() -> None:
    ((kind, doc),) = _events(stream_error(DeadlineExceeded("late"), "messages"))
    assert kind == "error"
    assert doc == {"type": "error", "error": {"type": "timeout_error", "message": "late"}}


def test_a_streams_sdk_timeout_bounds_its_first_chunk_not_the_stream() -> None:
    node = {b"x-stainless-timeout": b"600"}
    assert deadline_header(node, streamed=True) is None  # the default deadline
    assert first_chunk_wait(node) == 600.0
    # A whole answer's deadline passes SDK_GRACE_S after the SDK's timeout (the SDK leaves first).
    assert deadline_header(node, streamed=False) == str(600 + SDK_GRACE_S).encode()
    both = {**node, b"x-request-timeout": b"30"}
    assert deadline_header(both, streamed=True) == b"30"
    # Anthropic's Python SDK: NOT_GIVEN, and its client's timeout as the read timeout.
    python = {b"x-stainless-timeout": b"NOT_GIVEN", b"x-stainless-read-timeout": b"20.0"}
    assert first_chunk_wait(python) is None
    assert deadline_header(python, streamed=True) is None
    assert deadline_header(python, streamed=False) == str(20.0 + SDK_GRACE_S).encode()


def _final(relayed: bytes) -> FinalReply:
    return FinalReply(opening=OPENING, relayed=relayed)


async def test_the_first_chunk_must_come_within_the_wait() -> None:
    """Keep-alives do not count; a reply iterator still waiting is cancelled (its cancel goes
    out from there), and the request fails 504 before anything was sent."""
    closed: list[str] = []

    async def replies(delay: float) -> AsyncIterator[Reply]:
        try:
            yield Reply(ReplyKind.KEEPALIVE, b"")
            await asyncio.sleep(delay)
            yield Reply(ReplyKind.CHUNK, b"content")
        except asyncio.CancelledError:
            closed.append("cancelled")
            raise

    first = await first_reply(replies(0.01), 5.0)
    assert first is not None
    assert first.body == b"content"
    assert (await first_reply(replies(0.01), None)) == first
    with pytest.raises(DeadlineExceeded) as late:
        await first_reply(replies(5.0), 0.05)
    assert late.value.status == 504
    assert closed == ["cancelled"]


async def test_a_late_first_chunks_504_comes_a_grace_after_the_sdks_timeout() -> None:
    """The SDK gives up at its ``X-Stainless-Timeout`` (Anthropic's Python SDK sends its read
    timeout there) and raises its own timeout error; the edge's 504 at that very moment raced
    it. The 504 comes ``SDK_GRACE_S`` later; a begun provider's early start keeps to the SDK's
    own timeout (``begin_at(within)``), which it must beat."""

    async def replies(*timed: tuple[float, Reply]) -> AsyncIterator[Reply]:
        for delay, reply in timed:
            await asyncio.sleep(delay)
            yield reply

    chunk = Reply(ReplyKind.CHUNK, b"content")
    keepalive = Reply(ReplyKind.KEEPALIVE, b"")
    # Past the SDK's 0.1 s, within the grace: the chunk, not the 504 (the SDK's leaving stops it).
    assert await first_reply(replies((0.0, keepalive), (0.3, chunk)), 0.1) is chunk
    loop = asyncio.get_running_loop()
    began = loop.time()
    with pytest.raises(DeadlineExceeded) as late:
        await first_reply(replies((0.0, keepalive), (5.0, chunk)), 0.1)
    assert loop.time() - began >= 0.1 + SDK_GRACE_S - 0.05
    assert "(0.1 s, X-Stainless-Timeout, and 1 s for the SDK to leave first)" in str(late.value)
    started: list[float] = []
    begun = Reply(ReplyKind.KEEPALIVE, b"", begun=True)
    began = loop.time()
    first = await first_reply(
        replies((0.0, begun), (0.5, chunk)), 0.4, lambda: started.append(loop.time() - began)
    )
    assert first is chunk
    (at,) = started
    assert 0.15 <= at < 0.35, at  # begin_at(0.4) = 0.2: ahead of the SDK's own 0.4 s
