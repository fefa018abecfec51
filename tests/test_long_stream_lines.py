"""A streamed line longer than the model-proxy reads (4 MiB), on the session stack.

The provider produced it (and charges for it), but it cannot be passed on: the request is tried
on the route's next deployment and, with none left, is the client's 502
``all_deployments_failed`` naming the line. It was billed nothing, and its deployment was
cooled for every tenant; it is now billed its prompt's estimate, as an answer too large for the
bus is, and not cooled (the line is this request's, not a sign the provider is failing).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from nats.js.errors import NoKeysError

from switchyard.bus import subjects
from switchyard.schemas.health import PREFIX
from switchyard.schemas.routing import deployment_id
from tests.stacks import Stack

pytestmark = pytest.mark.integration

ROUTES = {"long-line": {"deployments": [{"provider": "fake", "model": "bigchunk:5000"}]}}
CHAT = {"model": "long-line", "messages": [{"role": "user", "content": "one long line"}]}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def routed(stack: Stack) -> AsyncIterator[Stack]:
    async with stack.live_routes(ROUTES):
        async with httpx.AsyncClient(base_url=stack.tail_url, timeout=60) as http:
            for _ in range(150):  # every head and model-proxy follows the table on its own
                probe = await http.post(
                    "/v1/chat/completions",
                    json={**CHAT, "model": "long-line", "max_tokens": 1},
                    headers={"Authorization": f"Bearer {stack.api_key}"},
                )
                if probe.status_code != 404:
                    break
                await asyncio.sleep(0.2)
        yield stack


@pytest.mark.asyncio(loop_scope="session")
async def test_a_streamed_line_over_4_mib_is_a_502_and_is_billed(routed: Stack) -> None:
    async with httpx.AsyncClient(base_url=routed.tail_url, timeout=60) as http:
        got = await http.post(
            "/v1/chat/completions",
            json={**CHAT, "stream": True},
            headers={"Authorization": f"Bearer {routed.api_key}", "X-Request-Id": "longline-1"},
        )
    assert got.status_code == 502, got.text[:300]
    error = got.json()["error"]
    assert error["code"] == "all_deployments_failed", error
    assert "streamed line longer than 4 MiB" in error["message"], error
    event = await routed.usage_of("longline-1")
    assert event is not None, "a streamed answer the provider produced went unbilled"
    assert event.status == 502
    assert event.prompt_tokens > 0
    assert event.prompt_tokens_estimated == event.prompt_tokens
    nc = await routed.connect("provisioner")
    try:
        health = await nc.jetstream(timeout=10).key_value(subjects.HEALTH_BUCKET)
        try:
            cooling = await health.keys()
        except NoKeysError:  # (nats-py's answer for an empty bucket)
            cooling = []
    finally:
        await nc.close()
    assert f"{PREFIX}{deployment_id('fake', 'bigchunk:5000')}" not in cooling
