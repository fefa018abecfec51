"""What an edge answers when it stops while requests wait, and which deployment an error names.

Pure logic on the edge's pieces: a :class:`Departure` listed in the edge's :class:`Waiting`,
the ASGI messages an error answer is made of (collected from ``send``), and the edge in front
of a small Starlette app standing in for its FastAPI side, driven without a server.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from switchyard.bus.replies import Reply, ReplyKind
from switchyard.config import Settings
from switchyard.errors import ApiError, ServiceUnavailable
from switchyard.ingress import fastpath
from switchyard.ingress.departure import Departure, Waiting
from switchyard.ingress.edge import Edge, FinalReply
from switchyard.ingress.fastpath import FastPath
from switchyard.runtime.tasks import TaskSupervisor

pytestmark = pytest.mark.unit

REFUSAL = b'{"error":{"message":"queue full","type":"rate_limit_error","code":"queue_full"}}'


async def _never() -> dict[str, Any]:
    """A client that neither sends more nor leaves."""
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


class _Sent:
    """An ASGI ``send`` that keeps what it was given."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def __call__(self, message: Any) -> None:
        self.messages.append(dict(message))

    @property
    def status(self) -> int:
        return int(self.messages[0]["status"])

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(self.messages[0]["headers"])

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages[1:])


async def test_stopping_interrupts_a_waiting_request_with_a_503() -> None:
    waiting, tasks = Waiting(), TaskSupervisor("test")
    entered = asyncio.Event()

    async def wait_for_answer() -> None:
        async with Departure(_never, tasks, waiting):
            entered.set()
            await asyncio.sleep(30)  # an answer that would come long after the edge is gone

    try:
        request = asyncio.ensure_future(wait_for_answer())
        await entered.wait()
        assert len(waiting) == 1
        assert waiting.stop() == 1
        with pytest.raises(ServiceUnavailable) as caught:
            await asyncio.wait_for(request, 5)
        assert caught.value.status == 503
        assert caught.value.code == "edge_stopping"
        assert caught.value.retry_after == 1
        assert len(waiting) == 0  # it left the registry on its way out

        # A request whose wait begins after the stop is refused at once.
        with pytest.raises(ServiceUnavailable):
            async with Departure(_never, tasks, waiting):
                pytest.fail("entered a wait on a stopped edge")
    finally:
        await tasks.cancel_all()


async def test_a_request_that_ends_is_no_longer_listed() -> None:
    waiting, tasks = Waiting(), TaskSupervisor("test")
    try:
        async with Departure(_never, tasks, waiting):
            assert len(waiting) == 1
        assert len(waiting) == 0
        assert waiting.stop() == 0
    finally:
        await tasks.cancel_all()


async def _replies(*replies: Reply) -> AsyncGenerator[Reply, None]:
    for reply in replies:
        yield reply


async def test_an_error_answer_names_the_deployment_that_refused() -> None:
    refusal = Reply(ReplyKind.ERROR, REFUSAL, status=503, deployment="fake--slow-1a2b", attempts=2)
    final = FinalReply()
    with pytest.raises(ApiError) as caught:
        await fastpath._whole(_replies(Reply(ReplyKind.KEEPALIVE, b""), refusal), final)
    assert final.refusal is refusal

    sent = _Sent()
    await fastpath._respond_error(sent, caught.value, "req-1", "chat", final.refusal)
    assert sent.status == 503
    assert sent.headers[b"x-switchyard-deployment"] == b"fake--slow-1a2b"
    assert sent.headers[b"x-switchyard-attempts"] == b"2"
    assert json.loads(sent.body)["error"]["code"] == "queue_full"


async def test_an_error_nobody_refused_names_no_deployment() -> None:
    sent = _Sent()
    await fastpath._respond_error(sent, ServiceUnavailable("no head", code="no_workers"), "r")
    assert b"x-switchyard-deployment" not in sent.headers
    assert b"x-switchyard-attempts" not in sent.headers


@pytest.mark.parametrize(
    ("op", "expected"),
    [
        ("chat", b'data: {"error":'),
        ("messages", b"event: error\n"),
        ("responses", b"event: error\n"),
    ],
)
async def test_a_started_stream_ends_with_the_dialects_error_event(
    op: str, expected: bytes
) -> None:
    sent = _Sent()
    call = fastpath._Call(op, "/v1/x")
    stopping = ServiceUnavailable("edge going", code="edge_stopping", retry_after=1)
    await fastpath._refuse(sent, call, stopping, "r", started=True)
    event, end = sent.messages
    if op == "responses":  # nothing relayed yet: opened first (OpenAI's SDK wants it)
        assert event["body"].startswith(b"event: response.created\n")
        assert expected in event["body"]
    else:
        assert event["body"].startswith(expected)
    assert b"edge going" in event["body"]  # (Anthropic's error events carry no code)
    assert event["more_body"] is True
    assert end == {"type": "http.response.body", "body": b"", "more_body": False}
    assert call.failure is stopping


async def _slow(request: Request) -> Response:
    await asyncio.sleep(30)
    return Response(b"{}", media_type="application/json")


async def _events(request: Request) -> Response:
    async def forever() -> AsyncIterator[bytes]:
        while True:
            yield b"event: overview\ndata: {}\n\n"
            await asyncio.sleep(0.02)

    return StreamingResponse(forever(), media_type="text/event-stream")


def _other_routes() -> tuple[FastPath, Edge]:
    """An edge in front of a small app of the FastAPI side: one slow answer, one endless
    event stream (as the admin pages' live views are)."""
    edge = Edge(Settings())
    app = Starlette(routes=[Route("/slow", _slow), Route("/events", _events)])
    return FastPath(edge, app), edge


def _get(path: str, *headers: tuple[bytes, bytes]) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},  # as uvicorn says
        "method": "GET",
        "path": path,
        "headers": list(headers),
        "query_string": b"",
    }


async def _until(condition: Callable[[], bool]) -> None:
    """Wait (5 s at most) until ``condition()`` holds."""
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0.01)


@pytest.mark.parametrize(
    ("headers", "anthropic_shape"),
    [((), False), (((b"anthropic-version", b"2023-06-01"),), True)],
)
async def test_stopping_answers_the_other_routes_503(
    headers: tuple[tuple[bytes, bytes], ...], anthropic_shape: bool
) -> None:
    asgi, edge = _other_routes()
    sent = _Sent()
    request = asyncio.ensure_future(asgi(_get("/slow", *headers), _never, sent))
    await _until(lambda: len(edge.waiting) == 1)
    assert edge.waiting.stop() == 1
    await asyncio.wait_for(request, 5)
    assert sent.status == 503
    assert sent.headers[b"retry-after"] == b"1"
    doc = json.loads(sent.body)
    if anthropic_shape:
        assert doc["type"] == "error"
        assert doc["error"]["type"] == "overloaded_error"
    else:
        assert doc["error"]["code"] == "edge_stopping"


async def test_stopping_ends_a_started_stream_of_the_other_routes() -> None:
    asgi, edge = _other_routes()
    sent = _Sent()
    request = asyncio.ensure_future(asgi(_get("/events"), _never, sent))
    await _until(lambda: bool(sent.messages))
    await asyncio.sleep(0.05)  # a few events went out
    assert edge.waiting.stop() == 1
    await asyncio.wait_for(request, 5)
    assert sent.status == 200
    assert sent.messages[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    assert len(edge.waiting) == 0
