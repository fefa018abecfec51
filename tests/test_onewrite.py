"""A whole response leaves uvicorn in one socket write, and is still a correct HTTP response."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
import uvicorn

from switchyard.ingress.onewrite import Message, Send, send_whole
from tests.support import free_port

BODY = b'{"ok":true}'


class _Counting:
    """Wraps the connection's real transport and counts the writes that reach it."""

    def __init__(self, transport: Any, writes: list[bytes]) -> None:
        self._transport = transport
        self._writes = writes

    def write(self, data: bytes) -> None:
        self._writes.append(data)
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def _app(writes: list[list[bytes]], *, whole: bool) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Send) -> None:
        if scope["type"] != "http":
            return
        await receive()
        cycle: Any = send.__self__  # type: ignore[attr-defined]
        seen: list[bytes] = []
        writes.append(seen)
        cycle.transport = _Counting(cycle.transport, seen)
        start: Message = {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"11")],
        }
        body: Message = {"type": "http.response.body", "body": BODY}
        if whole:
            await send_whole(send, start, body)
        else:
            await send(start)
            await send(body)

    return app


@pytest_asyncio.fixture
async def served(request: pytest.FixtureRequest) -> AsyncIterator[tuple[int, list[list[bytes]]]]:
    writes: list[list[bytes]] = []
    port = free_port()
    config = uvicorn.Config(
        _app(writes, whole=request.param),
        host="127.0.0.1",
        port=port,
        http="httptools",
        log_level="warning",
        lifespan="off",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield port, writes
    finally:
        server.should_exit = True
        await task


async def _exchange(port: int, *, close: bool) -> list[bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answers = []
    try:
        for last in (False, True):
            connection = b"close" if close and last else b"keep-alive"
            writer.write(
                b"POST /v1/x HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nConnection: "
                + connection
                + b"\r\n\r\n{}"
            )
            head = await reader.readuntil(b"\r\n\r\n")
            answers.append(head + await reader.readexactly(len(BODY)))
        if close:
            assert await reader.read() == b""  # the server closed after the answer
    finally:
        writer.close()
    return answers


@pytest.mark.parametrize("served", [True], indirect=True)
async def test_a_whole_response_is_one_write_and_a_valid_answer(
    served: tuple[int, list[list[bytes]]],
) -> None:
    port, writes = served
    answers = await _exchange(port, close=True)
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"content-length: 11\r\n" in answer
        assert answer.endswith(b"\r\n\r\n" + BODY)
    assert [len(w) for w in writes] == [1, 1]
    assert writes[0][0] == answers[0]


@pytest.mark.parametrize("served", [False], indirect=True)
async def test_plain_sends_write_twice(served: tuple[int, list[list[bytes]]]) -> None:
    """The baseline the change removes: uvicorn's own head write, then the body."""
    port, writes = served
    await _exchange(port, close=False)
    assert [len(w) for w in writes] == [2, 2]
