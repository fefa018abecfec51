"""An internal client that stops reading its socket mid-stream stalls only its own kind of
caller: the model-proxy sends internal callers' replies on a connection of their own, so the
HTTP edges' answers (on its main connection) are not held behind nats-server's stalls of the
producer feeding a slow consumer (docs/design-notes.md, "Internal clients' replies have a
connection of their own")."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest
import pytest_asyncio

from switchyard.bus import headers as h
from switchyard.bus import subjects
from switchyard.bus.connect import client_tls
from tests.stacks import Stack, start_stack
from tests.upstream import FakeOpenAI

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHAT = {"model": "echo", "messages": [{"role": "user", "content": "quick"}]}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def lanes(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI
) -> AsyncIterator[Stack]:
    routes: dict[str, Any] = {
        alias: {"deployments": [{"provider": "fake", "model": model}]}
        for alias, model in {"echo": "echo", "flood": "flood:40000"}.items()
    }
    extra = {
        "providers": {
            "fake": {"kind": "openai-compatible", "api_base": upstream.base_url, "concurrency": 8}
        },
        "routes": routes,
    }
    stack = await start_stack(tmp_path_factory.mktemp("lanes"), extra)
    try:
        yield stack
    finally:
        await stack.supervisor.stop()


async def _stalled_reader(stack: Stack, request: bytes) -> asyncio.StreamWriter:
    """An internal client (``app``) that asks for a large stream and then never reads its
    socket again: a raw NATS connection, since a client library keeps reading."""
    url = urlparse(stack.settings.nats_servers[0])
    host, port = url.hostname or "127.0.0.1", url.port or 4222
    reader, writer = await asyncio.open_connection(host, port)
    await reader.readline()  # INFO
    await writer.start_tls(client_tls(stack.settings.certs_dir, "app"), server_hostname=host)
    headers = (
        f"NATS/1.0\r\n{h.AUTHORIZATION}: Bearer {stack.api_key}\r\n"
        f"{h.REQUEST_ID}: stalled-{time.time_ns()}\r\n\r\n"
    ).encode()
    inbox = "_INBOX_app.stalled"
    writer.write(
        b'CONNECT {"verbose":false,"headers":true,"no_responders":true}\r\n'
        + f"SUB {inbox} 1\r\n".encode()
        + f"HPUB {subjects.CHAT} {inbox} {len(headers)} {len(headers) + len(request)}\r\n".encode()
        + headers
        + request
        + b"\r\n"
    )
    await writer.drain()
    return writer  # read from no more


async def _small_stream(http: httpx.AsyncClient, stack: Stack) -> float:
    began = time.monotonic()
    body = {**CHAT, "stream": True}
    auth = {"Authorization": f"Bearer {stack.api_key}"}
    async with http.stream("POST", "/v1/chat/completions", json=body, headers=auth) as answer:
        assert answer.status_code == 200
        async for _ in answer.aiter_bytes():
            pass
    return time.monotonic() - began


async def test_a_stalled_internal_client_does_not_slow_http_callers(lanes: Stack) -> None:
    async with httpx.AsyncClient(base_url=lanes.tail_url, timeout=60) as http:
        await _small_stream(http, lanes)  # warm: a first request opens pools
        request = json.dumps({**CHAT, "model": "flood", "stream": True}).encode()
        stalled = await _stalled_reader(lanes, request)
        try:
            await asyncio.sleep(1.5)  # the flood is under way and the socket full
            took = [await _small_stream(http, lanes) for _ in range(8)]
        finally:
            stalled.transport.abort()  # nothing to flush: the server may hold unread data
            with contextlib.suppress(Exception):
                await asyncio.wait_for(stalled.wait_closed(), 2)
    assert max(took) < 3.0, took  # 7.9-9.2 s measured before
