"""The last bytes the edge's protocol keeps of a request head (to answer a head that stops
with the CORS headers its browser needs): kept only while the head is read, on a real socket
with a real uvicorn protocol."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from switchyard.ingress.protocol import GuardedProtocol

ORIGIN = "https://app.example"
PORTS = range(40000, 40500)  # this helper's own range of ports


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Reads the whole body, answers 200."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


@contextlib.asynccontextmanager
async def _serving() -> AsyncIterator[tuple[int, list[GuardedProtocol]]]:
    protocol = type("Guarded", (GuardedProtocol,), {"cors_origins": (ORIGIN,)})
    config = uvicorn.Config(_app, http=protocol, lifespan="off", log_config=None)
    config.load()
    state = ServerState()
    made: list[GuardedProtocol] = []

    def factory() -> GuardedProtocol:
        made.append(protocol(config=config, server_state=state, app_state={}))
        return made[-1]

    loop = asyncio.get_running_loop()
    for port in PORTS:
        try:
            server = await loop.create_server(factory, "127.0.0.1", port)
            break
        except OSError:
            continue
    else:
        pytest.fail("no free port in this test's range")
    try:
        yield port, made
    finally:
        server.close()
        await server.wait_closed()


async def _until(check: Any) -> None:
    async with asyncio.timeout(5):
        while not check():
            await asyncio.sleep(0.01)


async def test_the_head_bytes_are_dropped_once_the_head_is_read_and_when_the_connection_ends() -> (
    None
):
    """The last 2 KiB read were refreshed on every read for the connection's whole life (its
    bodies too) and never dropped: each idle keep-alive connection held them, and with them,
    usually, the client's ``Authorization: Bearer`` key."""
    async with _serving() as (port, made):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        body = b'{"model":"m","input":"' + b"x" * 100 + b'"}'
        head = (
            b"POST /v1/responses HTTP/1.1\r\nHost: x\r\nOrigin: " + ORIGIN.encode() + b"\r\n"
            b"Authorization: Bearer sk-secret\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        writer.write(head[:30])  # a head still coming: its bytes are kept
        await _until(lambda: made and made[0]._tail)
        protocol = made[0]
        assert protocol._tail == head[:30]
        writer.write(head[30:])
        await _until(lambda: protocol._phase == "body")
        assert protocol._tail == b"", "the head's bytes outlived the head"
        writer.write(body[:20])
        await asyncio.sleep(0.05)
        assert protocol._tail == b"", "a body's bytes were kept"
        writer.write(body[20:])
        answer = await asyncio.wait_for(reader.readuntil(b"ok"), 5)
        assert answer.startswith(b"HTTP/1.1 200 ")
        assert protocol._tail == b""  # an idle keep-alive connection holds none
        writer.write(b"GET /v1/models HT")  # a second head: kept again while it comes
        await _until(lambda: protocol._tail)
        assert protocol._tail == b"GET /v1/models HT"
        writer.close()
        await _until(lambda: protocol.transport.is_closing() and not protocol._tail)
