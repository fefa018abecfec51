"""Revoking a key ends what it has running at the edges, on the session stack.

A revoked key was refused for new requests at once, but its streams ran on to their end (a
long agent loop, a runaway client: minutes, billed to a key its owner had just shut). Every
edge follows the keys bucket; a revocation (or deletion) now ends that key's requests in
progress: a stream with the error event ``api_key_revoked``, a whole answer with that 401. The
provider call stops (the cancel goes out as for a client that left); other keys' requests run
on.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from switchyard.admin.keys import KeyAdmin
from tests.stacks import Stack

pytestmark = pytest.mark.integration

ROUTES = {
    "revoke-trickle": {"deployments": [{"provider": "fake", "model": "trickle:50"}]},  # 15 s
    "revoke-slow": {"deployments": [{"provider": "fake", "model": "slow:8000"}]},
}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def routed(stack: Stack) -> AsyncIterator[Stack]:
    async with stack.live_routes(ROUTES):
        yield stack


def _body(model: str, *, stream: bool) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}


async def _stream_until_revoked(http: httpx.AsyncClient, key: str, started: asyncio.Event) -> str:
    headers = {"Authorization": f"Bearer {key}"}
    text = ""
    while not text:  # the heads may not know this module's routes yet (404)
        async with http.stream(
            "POST",
            "/v1/chat/completions",
            json=_body("revoke-trickle", stream=True),
            headers=headers,
        ) as resp:
            if resp.status_code == 404:
                await asyncio.sleep(0.2)
                continue
            assert resp.status_code == 200
            async for line in resp.aiter_lines():
                text += line + "\n"
                if '"content"' in line:
                    started.set()
    return text


@pytest.mark.asyncio(loop_scope="session")
async def test_revoking_a_key_ends_its_running_requests_and_no_one_elses(routed: Stack) -> None:
    key, record = await routed.new_key("revoke-running")
    other, _ = await routed.new_key("revoke-bystander")
    started = asyncio.Event()
    async with httpx.AsyncClient(base_url=routed.tail_url, timeout=60) as http:
        stream = asyncio.create_task(_stream_until_revoked(http, key, started))
        await asyncio.wait_for(started.wait(), 30)
        whole = asyncio.create_task(
            http.post(
                "/v1/chat/completions",
                json=_body("revoke-slow", stream=False),
                headers={"Authorization": f"Bearer {key}"},
            )
        )
        bystander = asyncio.create_task(
            http.post(
                "/v1/chat/completions",
                json=_body("revoke-slow", stream=False),
                headers={"Authorization": f"Bearer {other}"},
            )
        )
        await asyncio.sleep(1.0)  # both whole requests are at the provider
        nc = await routed.connect("admin")
        try:
            await KeyAdmin(nc.jetstream(timeout=10)).revoke(record.id)
        finally:
            await nc.close()
        revoked_at = time.monotonic()
        text = await asyncio.wait_for(stream, 10)
        answered = await asyncio.wait_for(whole, 10)
        ended_in = time.monotonic() - revoked_at
        kept = await asyncio.wait_for(bystander, 30)
    events = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]
    assert events[-1]["error"]["code"] == "api_key_revoked", text[-500:]
    assert sum(1 for e in events if e.get("choices")) < 100  # of 300: cut, not run out
    assert answered.status_code == 401, answered.text
    assert answered.json()["error"]["code"] == "api_key_revoked"
    assert ended_in < 5  # the slow answer would have come 7 s later
    assert kept.status_code == 200, kept.text  # another key's request ran on
