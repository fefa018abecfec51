"""What a client and an operator see of a provider key nobody can have, end to end.

* The head's answer after every attempt failed for want of its key carries ``Retry-After``
  over real HTTP (it had none: clients retried at once or not at all): 503 for a route whose
  only deployment's key is not stored (the session stack's ``nokey``), 502 for a route and its
  fallback whose keys cannot be fetched.
* ``switchyard_modelproxy_key_paused{deployment}`` on the model-proxy's ``/metrics``: 1 while
  it does not pull a deployment whose key it cannot fetch, 0 once it pulls again.

The second needs keys that cannot be fetched: ``unreachable`` runs no secrets service at all,
and one model-proxy, so every hand-back pauses the one process the test scrapes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from switchyard.runtime import semconv as sc
from switchyard.schemas.routing import deployment_id
from tests.stacks import Stack, start_stack
from tests.upstream import FakeOpenAI

pytestmark = pytest.mark.integration

CHAT = {"messages": [{"role": "user", "content": "hi"}]}
FIRST = deployment_id("vault-a", "echo")
FALLBACK = deployment_id("vault-b", "echo")


def _openai_error(resp: httpx.Response, code: str) -> dict[str, object]:
    error = resp.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}, error
    assert error["code"] == code
    return dict(error)


async def test_a_route_whose_only_key_is_missing_says_when_to_retry(stack: Stack) -> None:
    async with httpx.AsyncClient(timeout=60) as http:
        for base in (stack.tail_url, stack.gateway_url):
            resp = await http.post(
                f"{base}/v1/chat/completions",
                json={**CHAT, "model": "nokey"},
                headers={"Authorization": f"Bearer {stack.api_key}"},
            )
            assert resp.status_code == 503, resp.text
            assert resp.headers["retry-after"] == "2"
            error = _openai_error(resp, "secret_unavailable")
            assert "missing-secret" in str(error["message"])  # the secret's name, no value


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def unreachable(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI
) -> AsyncIterator[Stack]:
    def provider(secret: str) -> dict[str, object]:
        return {"kind": "openai-compatible", "api_base": upstream.base_url, "secret": secret}

    extra = {
        "providers": {"vault-a": provider("alpha-secret"), "vault-b": provider("beta-secret")},
        "routes": {
            "first": {
                "deployments": [{"provider": "vault-a", "model": "echo"}],
                "fallbacks": ["second"],
            },
            "second": {"deployments": [{"provider": "vault-b", "model": "echo"}]},
        },
        "stack": {"heads": 1, "modelproxies": 1},
    }
    stack = await start_stack(
        tmp_path_factory.mktemp("nosecrets"),
        extra,
        components=["control", "head", "modelproxy", "tail"],
    )
    try:
        yield stack
    finally:
        await stack.supervisor.stop()


async def _paused(stack: Stack) -> dict[str, float]:
    return {
        labels["deployment"]: value
        for name, labels, value in await stack.modelproxy_samples()
        if name == sc.KEY_PAUSED
    }


@pytest.mark.slow
async def test_keys_that_cannot_be_fetched_pause_pulls_and_the_answer_says_when(
    unreachable: Stack,
) -> None:
    async with httpx.AsyncClient(timeout=60) as http:
        request = asyncio.create_task(
            http.post(
                f"{unreachable.tail_url}/v1/chat/completions",
                json={**CHAT, "model": "first"},
                headers={"Authorization": f"Bearer {unreachable.api_key}"},
            )
        )
        seen: dict[str, set[float]] = {FIRST: set(), FALLBACK: set()}
        while not request.done():  # each deployment is paused, then pulled again, in turn
            for dep, value in (await _paused(unreachable)).items():
                seen.setdefault(dep, set()).add(value)
            await asyncio.sleep(0.05)
        resp = await request
    # Both deployments handed the request back and paused (several seconds each), then the
    # head had no candidate left: 502 as before, now with when to retry.
    assert 1.0 in seen[FIRST], seen
    assert 1.0 in seen[FALLBACK], seen
    assert resp.status_code == 502, resp.text
    assert resp.headers["retry-after"] == "2"
    error = _openai_error(resp, "all_deployments_failed")
    assert "alpha-secret" in str(error["message"])
    assert "beta-secret" in str(error["message"])
    # Pulled again: 0, and the series stays (it does not vanish between scrapes).
    deadline = time.monotonic() + 15
    while (now := await _paused(unreachable)) != {FIRST: 0.0, FALLBACK: 0.0}:
        assert time.monotonic() < deadline, now
        await asyncio.sleep(0.2)
