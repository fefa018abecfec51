"""A provider key sent back in a successful answer never reaches the client.

Errors were redacted, answers were not: a broken or hostile upstream that echoes the key it
was sent (``keyecho`` of the fake provider) handed the operator's provider key to the tenant,
streamed or not. On the session stack, with a provider and route of this module's own.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from tests.stacks import Stack
from tests.upstream import FakeOpenAI

pytestmark = pytest.mark.integration

NAME = "echoing-upstream"
KEY = f"sk-echo-{secrets.token_hex(16)}"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def routed(stack: Stack, upstream: FakeOpenAI) -> AsyncIterator[Stack]:
    provider = {"kind": "openai-compatible", "api_base": upstream.base_url, "secret": NAME}
    route = {"deployments": [{"provider": NAME, "model": "keyecho"}]}
    async with stack.live_routes({NAME: route}, {NAME: provider}, {NAME: KEY}):
        yield stack


async def _chat(stack: Stack, *, stream: bool) -> httpx.Response:
    body = {"model": NAME, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    headers = {"Authorization": f"Bearer {stack.api_key}"}
    async with httpx.AsyncClient(base_url=stack.tail_url, timeout=30) as http:
        for _ in range(100):  # every head and model-proxy follows the table on its own
            resp = await http.post("/v1/chat/completions", json=body, headers=headers)
            if resp.status_code != 404:
                return resp
    return resp


@pytest.mark.asyncio(loop_scope="session")
@pytest.mark.parametrize("stream", [False, True])
async def test_a_provider_key_in_a_successful_answer_is_masked(
    routed: Stack, upstream: FakeOpenAI, stream: bool
) -> None:
    resp = await _chat(routed, stream=stream)
    assert resp.status_code == 200, resp.text
    assert KEY not in resp.text
    assert "***" in resp.text  # (streamed, "echo:" is a chunk of its own)
    # The provider did get the key (what it sent back was masked on the way).
    assert any(c.headers.get("Authorization") == f"Bearer {KEY}" for c in upstream.calls)
