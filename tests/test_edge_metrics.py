"""The edge's request metrics against known traffic, read from its own ``/metrics``: a stream
that fails after it started and a client that leaves mid-stream count as failures (a
non-empty ``error_type``), a healthy stream as a success, and a request refused at the edge
or by a head (a 400 missing ``messages``, a 404 unknown model) under a refusal reason.

On the session stack, with routes of its own (their aliases are the model labels read).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from switchyard.runtime import semconv as sc
from tests.stacks import Stack

pytestmark = pytest.mark.integration

ROUTES = {
    "em-midfail": "midfail",
    "em-midfail-messages": "midfail:messages",  # a deployment of its own: a failure cools
    "em-echo": "echo",
    "em-trickle": "trickle:50",
    "em-slow": "slow:1500",
}
DURATION = f"{sc.SERVER_REQUEST_DURATION}_count"
TTFT = f"{sc.SERVER_TIME_TO_FIRST_TOKEN}_count"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def routed(stack: Stack) -> AsyncIterator[Stack]:
    for alias, model in ROUTES.items():
        route = {"deployments": [{"provider": "fake", "model": model}]}
        assert (await stack.admin("PUT", f"/routes/{alias}", route)).status_code == 200
    try:
        yield stack
    finally:
        for alias in ROUTES:
            await stack.admin("DELETE", f"/routes/{alias}")


async def _scrape(stack: Stack) -> list[tuple[str, dict[str, str], float]]:
    async with httpx.AsyncClient(timeout=10) as http:
        resp = await http.get(f"{stack.tail_url}/metrics")
    assert resp.status_code == 200, resp.text
    return [
        (sample.name, dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(resp.text)
        for sample in family.samples
    ]


async def _count(stack: Stack, name: str, **labels: str) -> float:
    return sum(
        value
        for sample, found, value in await _scrape(stack)
        if sample == name and all(found.get(k) == v for k, v in labels.items())
    )


def _chat(stack: Stack, model: str, *, stream: bool) -> dict[str, Any]:
    return {
        "url": f"{stack.tail_url}/v1/chat/completions",
        "json": {"model": model, "stream": stream, "messages": [{"role": "user", "content": "a"}]},
        "headers": {"Authorization": f"Bearer {stack.api_key}"},
    }


async def test_a_stream_failing_midway_counts_as_failed_and_a_healthy_one_as_success(
    routed: Stack,
) -> None:
    failed = {sc.REQUEST_MODEL: "em-midfail"}
    healthy = {sc.REQUEST_MODEL: "em-echo"}
    route = {"route": "/v1/chat/completions", "status": "200"}
    sent_200 = await _count(routed, sc.HTTP_REQUESTS, **route)
    async with httpx.AsyncClient(timeout=30) as http:
        # One: the failure cools the deployment down, and the next would be a 503.
        resp = await http.post(**_chat(routed, "em-midfail", stream=True))
        assert resp.status_code == 200, resp.text  # it started, then ended with the error
        assert '"provider_error"' in resp.text, resp.text
        resp = await http.post(**_chat(routed, "em-echo", stream=True))
        assert resp.status_code == 200
        assert resp.text.rstrip().endswith("data: [DONE]"), resp.text
    # As a whole answer failing the same way would: the error's class, never a success.
    assert await _count(routed, DURATION, **failed, error_type="provider_error") == 1
    assert await _count(routed, DURATION, **failed, error_type="") == 0
    assert await _count(routed, TTFT, **failed) == 1  # its first token did go out
    assert await _count(routed, DURATION, **healthy, error_type="") == 1
    assert await _count(routed, DURATION, **healthy) == 1
    # The HTTP counter keeps the status sent.
    assert await _count(routed, sc.HTTP_REQUESTS, **route) == sent_200 + 2


async def test_a_messages_stream_failing_midway_counts_as_failed_with_one_error_event(
    routed: Stack,
) -> None:
    """The same for a dialect stream, whose failure is told in the dialect's own error event
    (relayed from the model-proxy's last chunk): counted as failed, and told once."""
    failed = {sc.REQUEST_MODEL: "em-midfail-messages"}
    body = {"model": "em-midfail-messages", "max_tokens": 16, "stream": True}
    body["messages"] = [{"role": "user", "content": "a"}]
    headers = {"x-api-key": routed.api_key, "anthropic-version": "2023-06-01"}
    async with httpx.AsyncClient(timeout=30) as http:
        resp = await http.post(f"{routed.tail_url}/v1/messages", json=body, headers=headers)
    assert resp.status_code == 200, resp.text
    events = [line[6:].strip() for line in resp.text.splitlines() if line.startswith("event:")]
    assert events.count("error") == 1, events
    assert events[-1] == "error", events
    assert await _count(routed, DURATION, **failed, error_type="provider_error") == 1
    assert await _count(routed, DURATION, **failed, error_type="") == 0


async def _counted(stack: Stack, **labels: str) -> None:
    """Until the edge counted a request of these labels (it notices a client leave at once,
    and counts the request as its cancel goes out)."""
    deadline = time.monotonic() + 10
    while await _count(stack, DURATION, **labels) == 0:
        assert time.monotonic() < deadline, f"the edge never counted {labels}"
        await asyncio.sleep(0.2)


async def test_a_client_leaving_mid_stream_counts_as_one_leaving_a_whole_answer(
    routed: Stack,
) -> None:
    whole = {sc.REQUEST_MODEL: "em-slow"}
    async with httpx.AsyncClient(timeout=0.5) as http:
        with pytest.raises(httpx.ReadTimeout):  # gives up on a 1.5 s answer, and leaves
            await http.post(**_chat(routed, "em-slow", stream=False))
    await _counted(routed, **whole)
    assert await _count(routed, DURATION, **whole, error_type="cancelled") == 1
    left = {sc.REQUEST_MODEL: "em-trickle"}
    request = _chat(routed, "em-trickle", stream=True)
    async with (
        httpx.AsyncClient(timeout=30) as http,
        http.stream("POST", **request) as resp,
    ):
        assert resp.status_code == 200
        chunks = 0
        async for line in resp.aiter_lines():
            chunks += line.startswith("data: {")
            if chunks == 3:
                break  # leaving closes the connection: the rest (300 x 50 ms) is unread
    await _counted(routed, **left)
    assert await _count(routed, DURATION, **left, error_type="cancelled") == 1
    assert await _count(routed, DURATION, **left, error_type="") == 0


async def test_a_400_and_a_404_the_edge_answers_are_refusals_by_reason(routed: Stack) -> None:
    invalid = await _count(routed, sc.REFUSALS, reason="invalid")
    model = await _count(routed, sc.REFUSALS, reason="model")
    async with httpx.AsyncClient(timeout=30) as http:
        missing = _chat(routed, "em-echo", stream=False)
        del missing["json"]["messages"]
        resp = await http.post(**missing)
        assert resp.status_code == 400, resp.text
        assert resp.json()["error"]["code"] == "missing_required_parameter"
        unknown = _chat(routed, "em-no-such-model", stream=False)
        resp = await http.post(**unknown)
        assert resp.status_code == 404, resp.text
        assert resp.json()["error"]["code"] == "model_not_found"
    assert await _count(routed, sc.REFUSALS, reason="invalid") == invalid + 1
    assert await _count(routed, sc.REFUSALS, reason="model") == model + 1


async def test_a_405_counts_under_its_route(routed: Stack) -> None:
    """A GET to an LLM route is a 405, counted under ``route="_OTHER"``: an SRE looking at the
    route's requests did not see them. Both the LLM API's routes (answered without a route
    object) and the others' are counted under their template."""
    cases = {"/v1/chat/completions": "GET", "/v1/messages": "GET", "/v1/models": "DELETE"}
    labels = {path: {"method": method, "status": "405"} for path, method in cases.items()}
    before = {
        path: await _count(routed, sc.HTTP_REQUESTS, route=path, **found)
        for path, found in labels.items()
    }
    async with httpx.AsyncClient(timeout=30) as http:
        for path, method in cases.items():
            resp = await http.request(method, f"{routed.tail_url}{path}")
            assert resp.status_code == 405, resp.text
    for path, found in labels.items():
        now = await _count(routed, sc.HTTP_REQUESTS, route=path, **found)
        assert now == before[path] + 1, (path, now, before[path])
