"""JSON nested deep enough to reach the interpreter's recursion limit somewhere past the edge,
end to end on the session stack: each is the client's 400 (or a batch that fails validation),
never a provider failure that cools a deployment for every tenant, a 500, or a batch retried
for ever."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from tests.fakes.anthropic import FakeAnthropic
from tests.stacks import Stack

pytestmark = pytest.mark.integration

ROUTE = "s41-deep-claude"
# ~500 JSON levels: every JSON decoder on the way takes it; litellm's walk of the tools does not.
SCHEMA_LEVELS = 250


def _schema(levels: int) -> str:
    """A tool's parameters schema nesting one object property ``levels`` times."""
    opening = '{"type":"object","properties":{"a":'
    return opening * levels + '{"type":"string"}' + "}}" * levels


def _anthropic_headers(key: str) -> dict[str, str]:
    return {"x-api-key": key, "anthropic-version": "2023-06-01"}


@pytest_asyncio.fixture(loop_scope="session")
async def litellm_route(
    stack: Stack, claude_fake: tuple[FakeAnthropic, str]
) -> AsyncIterator[FakeAnthropic]:
    """A route of one deployment served through litellm (kind ``anthropic``), this test only."""
    fake, url = claude_fake
    provider = {"kind": "anthropic", "api_base": url, "secret": ROUTE}
    route = {"deployments": [{"provider": ROUTE, "model": "ok"}]}
    try:
        stored = await stack.admin("PUT", f"/secrets/{ROUTE}", {"value": "sk-ant-s41-fake-key"})
        assert stored.status_code in (200, 201), stored.text
        assert (await stack.admin("PUT", f"/providers/{ROUTE}", provider)).status_code == 200
        assert (await stack.admin("PUT", f"/routes/{ROUTE}", route)).status_code == 200
        async with httpx.AsyncClient(base_url=stack.tail_url, timeout=30) as http:
            for _ in range(300):  # every head and model-proxy follows the table on its own
                probe = await _chat(http, stack.api_key, "up")
                if probe.status_code == 200:
                    break
                await asyncio.sleep(0.1)
            assert probe.status_code == 200, probe.text
        yield fake
    finally:
        await stack.admin("DELETE", f"/routes/{ROUTE}")
        await stack.admin("DELETE", f"/providers/{ROUTE}")
        await stack.admin("DELETE", f"/secrets/{ROUTE}?force=true")


async def _chat(
    http: httpx.AsyncClient, key: str, text: str, tools: str = "", *, stream: bool = False
) -> httpx.Response:
    extra = (f',"tools":{tools}' if tools else "") + (',"stream":true' if stream else "")
    body = f'{{"model":"{ROUTE}","messages":[{{"role":"user","content":"{text}"}}]{extra}}}'
    return await http.post(
        "/v1/chat/completions",
        content=body,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )


async def test_a_request_litellm_cannot_walk_is_the_clients_400_and_cools_nothing(
    stack: Stack, litellm_route: FakeAnthropic
) -> None:
    """It was a provider 502 that cooled the deployment: any key could put a litellm-served
    deployment out of service for every tenant (503 ``deployments_cooling_down``) with one
    request that never reached the provider. Translated dialects go the same way."""
    schema = _schema(SCHEMA_LEVELS)
    tool = f'[{{"type":"function","function":{{"name":"f","parameters":{schema}}}}}]'
    before = len(litellm_route.calls)
    async with httpx.AsyncClient(base_url=stack.tail_url, timeout=60) as http:
        deep = await _chat(http, stack.api_key, "deep", tools=tool)
        streamed = await _chat(http, stack.api_key, "deep", tools=tool, stream=True)
        translated = await http.post(
            "/v1/responses",
            content=(
                f'{{"model":"{ROUTE}","input":"deep","tools":[{{"type":"function","name":"f",'
                f'"parameters":{schema}}}]}}'
            ),
            headers={"Authorization": f"Bearer {stack.api_key}"},
        )
        victim = await _chat(http, stack.api_key, "after")
    for refused in (deep, streamed, translated):
        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert error["type"] == "invalid_request_error"
        assert "nests objects or lists too deeply" in error["message"]
    assert victim.status_code == 200, victim.text
    assert len(litellm_route.calls) == before + 1  # only the victim's request reached it


async def test_a_batch_line_nested_past_the_decoder_fails_validation_naming_it(
    stack: Stack,
) -> None:
    """It reached the runner's retry loop as a RecursionError: the batch stayed
    ``validating`` and was read again every 2 s for ever."""
    good = {
        "custom_id": "good",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
    }
    deep = (
        b'{"custom_id":"deep","method":"POST","url":"/v1/chat/completions","body":'
        b'{"model":"gpt-4o-mini","x":' + b"[" * 5000 + b"]" * 5000 + b"}}"
    )
    content = json.dumps(good).encode() + b"\n" + deep + b"\n"
    headers = {"Authorization": f"Bearer {stack.api_key}"}
    async with httpx.AsyncClient(base_url=stack.tail_url, timeout=30) as http:
        upload = await http.post(
            "/v1/files",
            files={"file": ("deep.jsonl", content)},
            data={"purpose": "batch"},
            headers=headers,
        )
        assert upload.status_code == 200, upload.text
        created = await http.post(
            "/v1/batches",
            json={
                "input_file_id": upload.json()["id"],
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
            },
            headers=headers,
        )
        assert created.status_code == 200, created.text
        batch_id = created.json()["id"]
        batch: dict[str, Any] = {}
        for _ in range(300):  # the runner takes it at once; 30 s on a loaded host
            batch = (await http.get(f"/v1/batches/{batch_id}", headers=headers)).json()
            if batch["status"] not in ("validating", "in_progress"):
                break
            await asyncio.sleep(0.1)
    assert batch["status"] == "failed", batch
    [error] = batch["errors"]["data"]
    assert (error["code"], error["line"]) == ("invalid_json_line", 2)
    assert "nested too deeply" in error["message"]


@pytest.mark.parametrize("edge", ["tail", "gateway"])
async def test_a_message_batch_nested_past_the_decoder_is_a_400_in_anthropics_shape(
    stack: Stack, edge: str
) -> None:
    """It was a 500 on both edges."""
    url = stack.tail_url if edge == "tail" else stack.gateway_url
    body = (
        b'{"requests":[{"custom_id":"a","params":{"model":"gpt-4o-mini","x":'
        + b"[" * 5000
        + b"]" * 5000
        + b"}}]}"
    )
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        response = await http.post(
            "/v1/messages/batches", content=body, headers=_anthropic_headers(stack.api_key)
        )
    assert response.status_code == 400, response.text
    doc = response.json()
    assert doc["type"] == "error"
    assert doc["error"]["type"] == "invalid_request_error"
    assert "nested too deeply" in doc["error"]["message"]
