"""A request whose deadline leaves less time than the deployment's calls take lately is
answered at once (504 ``deadline_too_short``) instead of occupying a provider slot for an
answer its caller will never see (``workers/modelproxy/pace.py``)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from switchyard.workers.modelproxy.pace import MIN_SAMPLES
from tests.stacks import Stack
from tests.upstream import FakeOpenAI

pytestmark = pytest.mark.integration

MODEL = "slow:1500"


def _chat(text: str) -> bytes:
    return json.dumps(
        {"model": "pace-floor", "messages": [{"role": "user", "content": text}]}
    ).encode()


async def test_a_request_too_short_for_the_deployment_is_not_started(
    stack: Stack, upstream: FakeOpenAI
) -> None:
    route = {"deployments": [{"provider": "fake", "model": MODEL}]}
    assert (await stack.admin("PUT", "/routes/pace-floor", route)).status_code == 200
    headers = {"Authorization": f"Bearer {stack.api_key}", "Content-Type": "application/json"}
    try:
        async with httpx.AsyncClient(base_url=stack.tail_url, timeout=30) as http:
            # The deployment's pace: enough calls of ~1.5 s for every model-proxy (each
            # keeps its own; the session stack has two, which share the calls unevenly).
            for _ in range(5):
                answers = await asyncio.gather(
                    *(
                        http.post(
                            "/v1/chat/completions", content=_chat(f"warm {n}"), headers=headers
                        )
                        for n in range(MIN_SAMPLES)
                    )
                )
                assert [a.status_code for a in answers] == [200] * MIN_SAMPLES
            before = len(upstream.calls_for(MODEL))
            short = {**headers, "X-Request-Timeout": "0.8"}
            refused = await http.post(
                "/v1/chat/completions", content=_chat("too late"), headers=short
            )
            assert refused.status_code == 504, refused.text
            assert refused.json()["error"]["code"] == "deadline_too_short"
            assert "not started" in refused.json()["error"]["message"]
            # Time enough: served as before.
            fine = {**headers, "X-Request-Timeout": "10"}
            ok = await http.post("/v1/chat/completions", content=_chat("in time"), headers=fine)
            assert ok.status_code == 200, ok.text
        texts = [c.body["messages"][0]["content"] for c in upstream.calls_for(MODEL)[before:]]
        assert texts == ["in time"]  # the provider never saw the hopeless one
    finally:
        await stack.admin("DELETE", "/routes/pace-floor")
