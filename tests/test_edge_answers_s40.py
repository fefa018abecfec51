"""What the edges and the dialect translations send on, end to end on the session stack: the
output limit a chat server reads, every ``anthropic-beta`` line of a request, and the
``results_url`` of a message batch seen through a TLS-ending proxy."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from tests.fakes.anthropic import FakeAnthropic
from tests.stacks import Stack
from tests.upstream import FakeOpenAI

pytestmark = pytest.mark.integration


def _anthropic_headers(stack: Stack) -> dict[str, str]:
    return {"x-api-key": stack.api_key, "anthropic-version": "2023-06-01"}


def _sent(upstream: FakeOpenAI, marker: str) -> dict[str, Any]:
    """The body of the one upstream call whose messages carry ``marker``."""
    found = [c.body for c in upstream.calls_for("echo") if marker in str(c.body.get("messages"))]
    assert len(found) == 1, found
    return found[0]


async def test_translated_output_limits_reach_a_chat_server_as_max_tokens(
    stack: Stack, upstream: FakeOpenAI
) -> None:
    """``gpt-4o-mini`` is an ``openai-compatible`` deployment: such servers (Ollama, vLLM...)
    read ``max_tokens`` and ignore ``max_completion_tokens``, i.e. generate without a limit."""
    marker = uuid.uuid4().hex
    async with httpx.AsyncClient(base_url=stack.tail_url, timeout=30) as http:
        messages = await http.post(
            "/v1/messages",
            json={
                "model": "gpt-4o-mini",
                "max_tokens": 33,
                "messages": [{"role": "user", "content": f"m {marker}"}],
            },
            headers=_anthropic_headers(stack),
        )
        assert messages.status_code == 200, messages.text
        responses = await http.post(
            "/v1/responses",
            json={"model": "gpt-4o-mini", "max_output_tokens": 44, "input": f"r {marker}"},
            headers={"Authorization": f"Bearer {stack.api_key}"},
        )
        assert responses.status_code == 200, responses.text
    from_messages = _sent(upstream, f"m {marker}")
    assert from_messages.get("max_tokens") == 33
    assert "max_completion_tokens" not in from_messages
    from_responses = _sent(upstream, f"r {marker}")
    assert from_responses.get("max_tokens") == 44
    assert "max_completion_tokens" not in from_responses


@pytest_asyncio.fixture(loop_scope="session")
async def claude_route(
    stack: Stack, claude_fake: tuple[FakeAnthropic, str]
) -> AsyncIterator[FakeAnthropic]:
    """A route to a native Anthropic provider on the session stack, for this test only."""
    fake, url = claude_fake
    provider = {"kind": "anthropic", "api_base": url}
    route = {"deployments": [{"provider": "s40-claude", "model": "ok"}]}
    try:
        assert (await stack.admin("PUT", "/providers/s40-claude", provider)).status_code == 200
        assert (await stack.admin("PUT", "/routes/s40-claude", route)).status_code == 200
        # Every head and model-proxy follows the route table on its own: wait until it routes.
        body = {
            "model": "s40-claude",
            "max_tokens": 8,
            "messages": [{"role": "user", "content": "up"}],
        }
        async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30) as http:
            for _ in range(300):  # at once, or a few seconds on a loaded host
                probe = await http.post(
                    "/v1/messages", json=body, headers=_anthropic_headers(stack)
                )
                if probe.status_code == 200:
                    break
                await asyncio.sleep(0.1)
            assert probe.status_code == 200, probe.text
        yield fake
    finally:
        await stack.admin("DELETE", "/routes/s40-claude")
        await stack.admin("DELETE", "/providers/s40-claude")


async def test_every_anthropic_beta_line_reaches_anthropic(
    stack: Stack, claude_route: FakeAnthropic
) -> None:
    """An SDK's own betas and the caller's may come as separate header lines: one list."""
    headers = [
        *_anthropic_headers(stack).items(),
        ("anthropic-beta", "files-api-2025-04-14"),
        ("anthropic-beta", "token-efficient-tools-2025-02-19, context-1m-2025-08-07"),
    ]
    body = {"model": "s40-claude", "max_tokens": 8, "messages": [{"role": "user", "content": "b"}]}
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30) as http:
        answer = await http.post("/v1/messages", json=body, headers=headers)
    assert answer.status_code == 200, answer.text
    sent = {k.lower(): v for k, v in claude_route.calls[-1].headers.items()}
    assert sent.get("anthropic-beta") == (
        "files-api-2025-04-14,token-efficient-tools-2025-02-19,context-1m-2025-08-07"
    )


async def test_results_url_behind_a_tls_proxy_names_the_public_address(stack: Stack) -> None:
    """Anthropic's SDK fetches ``results_url`` as given, with the caller's key: it must name
    the https address the proxy serves, not the edge's own plain-http one."""
    proxy = {
        **_anthropic_headers(stack),
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "llm.example.com",
    }
    request = {
        "custom_id": "one",
        "params": {
            "model": "gpt-4o-mini",
            "max_tokens": 8,
            "messages": [{"role": "user", "content": "results url"}],
        },
    }
    async with httpx.AsyncClient(base_url=stack.tail_url, timeout=30) as http:
        created = await http.post(
            "/v1/messages/batches", json={"requests": [request]}, headers=proxy
        )
        assert created.status_code == 200, created.text
        batch_id = created.json()["id"]
        try:
            for _ in range(600):  # the runner takes it within seconds; 60 s on a loaded host
                got = await http.get(f"/v1/messages/batches/{batch_id}", headers=proxy)
                assert got.status_code == 200, got.text
                if got.json()["processing_status"] == "ended":
                    break
                await asyncio.sleep(0.1)
            doc = got.json()
            assert doc["processing_status"] == "ended", doc
            assert doc["results_url"] == (
                f"https://llm.example.com/v1/messages/batches/{batch_id}/results"
            )
            direct = await http.get(
                f"/v1/messages/batches/{batch_id}", headers=_anthropic_headers(stack)
            )
            assert direct.json()["results_url"].startswith(f"{stack.tail_url}/v1/")
        finally:
            await http.delete(f"/v1/messages/batches/{batch_id}", headers=proxy)
