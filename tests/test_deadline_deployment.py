"""A 504 ``deadline_exceeded`` whose deadline passed while a deployment had the request names
that deployment (``x-switchyard-deployment``), as every other answer of a deployment does: an
SRE saw it missing on the 504s of a slow provider. The session stack, its fake provider."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.stacks import Stack

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_a_deadline_passed_at_the_provider_names_the_deployment(
    stack: Stack, stream: bool
) -> None:
    body = {"model": "slow", "stream": stream, "messages": [{"role": "user", "content": "late"}]}
    headers = {"Authorization": f"Bearer {stack.api_key}", "X-Request-Timeout": "1"}
    async with httpx.AsyncClient(base_url=stack.tail_url, timeout=30) as http:
        answer = await http.post("/v1/chat/completions", json=body, headers=headers)
    assert answer.status_code == 504, answer.text
    assert answer.json()["error"]["code"] == "deadline_exceeded"
    assert answer.headers.get("x-switchyard-deployment", "").startswith("fake--slow"), dict(
        answer.headers
    )


async def test_a_deadline_passed_after_a_reroute_names_the_deployment_rerouted_to(
    stack: Stack,
) -> None:
    """The first deployment fails at once (500), the fallback's is slow: the 504 names the
    fallback's, whose queue the request was placed in last (each head's ``accepted`` says
    which placement it names, ``Sy-Placement``; a late first one no longer wins)."""
    routes: dict[str, dict[str, Any]] = {
        "s-dd-fails": {
            "deployments": [{"provider": "fake", "model": "status:500"}],
            "fallbacks": ["s-dd-slow"],
        },
        "s-dd-slow": {"deployments": [{"provider": "fake", "model": "slow:4000"}]},
    }
    try:
        for alias in ("s-dd-slow", "s-dd-fails"):
            put = await stack.admin("PUT", f"/routes/{alias}", routes[alias])
            assert put.status_code == 200, put.text
        body = {"model": "s-dd-fails", "messages": [{"role": "user", "content": "late"}]}
        headers = {"Authorization": f"Bearer {stack.api_key}", "X-Request-Timeout": "2"}
        async with httpx.AsyncClient(base_url=stack.tail_url, timeout=30) as http:
            for _ in range(100):  # every head and model-proxy follows the table on its own
                answer = await http.post("/v1/chat/completions", json=body, headers=headers)
                if answer.status_code == 504:
                    break
                await asyncio.sleep(0.2)
        assert answer.status_code == 504, answer.text
        named = answer.headers.get("x-switchyard-deployment", "")
        assert named.startswith("fake--slow"), dict(answer.headers)
    finally:
        for alias in ("s-dd-fails", "s-dd-slow"):
            await stack.admin("DELETE", f"/routes/{alias}")
