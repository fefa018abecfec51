"""An edge that stops while a stream's opening waits on flow control answers that stream once.

A stream's response start and first chunk go out together (:func:`send_whole`); the second of
the two sends can wait while the client reads slowly. A stop landing there must end the
stream with its error event: the server already has a start, and a second one (the 503) is an
error of the server (uvicorn: ``RuntimeError: Unexpected ASGI message``) instead of an answer.
A stop landing before the server took the start is still a plain 503.

The edge's pieces as :meth:`FastPath._llm` puts them together, with a ``send`` that behaves as
uvicorn's: it waits while the transport is paused before it takes a message, and refuses a
message out of order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator
from typing import Any

import pytest

from switchyard.bus.replies import Reply, ReplyKind
from switchyard.errors import ApiError
from switchyard.ingress import fastpath, stream_relay
from switchyard.ingress.departure import Departure, Waiting
from switchyard.runtime.tasks import TaskSupervisor

pytestmark = pytest.mark.unit

CHUNK = b'{"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{}}]}'


async def _never() -> dict[str, Any]:
    """A client that neither sends more nor leaves."""
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


class _Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)


class _Cycle:
    """Stands in for uvicorn's request cycle: ``send`` first waits while the transport is
    paused (the client does not read), then takes the message or refuses it as uvicorn does.
    The transport pauses once ``pause_after`` messages were taken."""

    def __init__(self, pause_after: int) -> None:
        self.transport = _Transport()
        self.messages: list[dict[str, Any]] = []
        self.writable = asyncio.Event()
        self.stalled = asyncio.Event()  # set whenever a send waits
        self._pause_after = pause_after
        if pause_after > 0:
            self.writable.set()

    async def send(self, message: Any) -> None:
        if not self.writable.is_set():
            self.stalled.set()
            await self.writable.wait()
        started = bool(self.messages)
        if message["type"] == "http.response.start" and started:
            raise RuntimeError("Unexpected ASGI message 'http.response.start' sent")
        if message["type"] == "http.response.body" and not started:
            raise RuntimeError("Expected ASGI message 'http.response.start'")
        self.messages.append(dict(message))
        self.transport.write(b"-")
        if len(self.messages) == self._pause_after:
            self.writable.clear()


async def _chunks() -> AsyncGenerator[Reply, None]:
    yield Reply(ReplyKind.CHUNK, CHUNK, deployment="fake--d", attempts=1)
    await asyncio.Event().wait()  # the rest of the stream comes later


async def _relay(send: fastpath.Send, waiting: Waiting, tasks: TaskSupervisor) -> None:
    """A streamed request at the edge, from its wait for replies to its answer."""
    state = {"started": False}
    call = fastpath._Call("chat", "/v1/chat/completions")
    try:
        async with (
            Departure(_never, tasks, waiting) as departure,
            contextlib.aclosing(_chunks()) as replies,
        ):
            await stream_relay.relay_stream(
                replies,
                headers=list(stream_relay.SSE_HEADERS),
                departure=departure,
                send=send,
                state=state,
                final=call.final,
            )
    except ApiError as exc:
        await fastpath._refuse(send, call, exc, "r", started=state["started"])


async def _stop_while_stalled(cycle: _Cycle, send: fastpath.Send) -> None:
    """Run a request until its send waits, stop the edge, let the client read again."""
    waiting, tasks = Waiting(), TaskSupervisor("test")
    try:
        request = asyncio.ensure_future(_relay(send, waiting, tasks))
        await asyncio.wait_for(cycle.stalled.wait(), 5)
        cycle.stalled.clear()
        assert waiting.stop() == 1
        await asyncio.wait_for(cycle.stalled.wait(), 5)  # the answer to the stop waits too
        cycle.writable.set()
        await asyncio.wait_for(request, 5)
    finally:
        await tasks.cancel_all()


async def test_a_stop_while_the_opening_chunk_waits_ends_the_stream_once() -> None:
    """A ``send`` that is not uvicorn's own (another server, a middleware): the start and the
    first chunk are two sends, and the start was taken when the chunk's send waits."""
    cycle = _Cycle(pause_after=1)

    async def send(message: Any) -> None:
        await cycle.send(message)

    await _stop_while_stalled(cycle, send)
    start, event, end = cycle.messages
    assert start["type"] == "http.response.start"
    assert start["status"] == 200
    assert event["body"].startswith(b'data: {"error":')
    assert b"edge_stopping" in event["body"]
    assert end == {"type": "http.response.body", "body": b"", "more_body": False}


async def test_a_stop_before_the_server_took_the_start_is_a_503() -> None:
    """uvicorn waits for a paused transport before it takes a start: a stop there leaves no
    response begun, and the client gets the 503 (not an error event without a start)."""
    cycle = _Cycle(pause_after=0)
    await _stop_while_stalled(cycle, cycle.send)
    start, body = cycle.messages
    assert start["status"] == 503
    assert json.loads(body["body"])["error"]["code"] == "edge_stopping"
