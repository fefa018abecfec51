"""Clients other than the OpenAI SDK, on a real edge over raw sockets: an HTTP/1.0 client
reading a stream, and bytes that are not HTTP at all."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from tests.stacks import Stack, start_stack
from tests.upstream import FakeOpenAI

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def edge(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI
) -> AsyncIterator[Stack]:
    extra = {
        "providers": {"fake": {"kind": "openai-compatible", "api_base": upstream.base_url}},
        "routes": {"echo": {"deployments": [{"provider": "fake", "model": "echo"}]}},
    }
    stack = await start_stack(tmp_path_factory.mktemp("clients"), extra)
    try:
        yield stack
    finally:
        await stack.supervisor.stop()


async def _until_closed(stack: Stack, raw: bytes, *, wait: float = 10.0) -> tuple[bytes, bool]:
    """Send ``raw`` on a new connection; what came back, and whether the server closed it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.settings.ingress.tail.port)
    writer.write(raw)
    await writer.drain()
    got, closed = b"", False
    try:
        async with asyncio.timeout(wait):
            while chunk := await reader.read(65536):
                got += chunk
            closed = True
    except TimeoutError:
        pass
    writer.close()
    return got, closed


def _chat(stack: Stack, body: dict[str, Any], version: bytes = b"1.1") -> bytes:
    raw = json.dumps(body).encode()
    return (
        b"POST /v1/chat/completions HTTP/" + version + b"\r\nHost: x\r\n"
        b"Authorization: Bearer " + stack.api_key.encode() + b"\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(raw) + raw
    )


def _head(raw: bytes) -> dict[bytes, bytes]:
    lines = raw.partition(b"\r\n\r\n")[0].split(b"\r\n")[1:]
    return {k.strip().lower(): v.strip() for k, _, v in (line.partition(b":") for line in lines)}


async def test_a_stream_to_an_http10_client_is_not_chunked_and_ends_with_the_close(
    edge: Stack,
) -> None:
    """RFC 9112: no chunked encoding to an HTTP/1.0 client; the body is raw and the
    connection's close ends it (``curl -0 -N`` showed the chunk sizes among the events)."""
    body = {"model": "echo", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    got, closed = await _until_closed(edge, _chat(edge, body, b"1.0"))
    assert got.startswith(b"HTTP/1.1 200"), got[:300]
    head = _head(got)
    assert b"transfer-encoding" not in head, head
    assert b"content-length" not in head, head
    assert head.get(b"connection") == b"close", head
    assert closed
    events = got.partition(b"\r\n\r\n")[2]
    assert events.startswith(b"data: {"), events[:100]  # no chunk size before the first event
    assert events.endswith(b"data: [DONE]\n\n"), events[-100:]
    datas = [line for line in events.split(b"\n") if line]
    assert all(line.startswith(b"data: ") for line in datas), datas
    assert json.loads(datas[0][6:])["object"] == "chat.completion.chunk"


async def test_http10_answers_of_known_length_keep_their_length(edge: Stack) -> None:
    body = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}
    got, closed = await _until_closed(edge, _chat(edge, body, b"1.0"))
    head = _head(got)
    assert got.startswith(b"HTTP/1.1 200"), got[:300]
    assert int(head[b"content-length"]) == len(got.partition(b"\r\n\r\n")[2])
    assert head.get(b"connection") == b"close"
    assert closed
    assert json.loads(got.partition(b"\r\n\r\n")[2])["object"] == "chat.completion"


async def test_a_stream_to_an_http11_client_is_still_chunked(edge: Stack) -> None:
    body = {"model": "echo", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    raw = _chat(edge, body).replace(b"Host: x\r\n", b"Host: x\r\nConnection: close\r\n")
    got, closed = await _until_closed(edge, raw)
    assert _head(got).get(b"transfer-encoding") == b"chunked", got[:300]
    assert got.endswith(b"0\r\n\r\n")
    assert closed
