"""A request only a native deployment can serve is not failed over to a translating one.

On the session stack, with this module's providers and routes (removed at the end): a native
Responses deployment that answers 429 (``Retry-After: 7``) with a translated fallback answers a
``previous_response_id`` request 429 with ``Retry-After``, and, while it cools down, at once
429 again, where the fallback's translation would have refused it 400 (a status SDKs never
retry). The same for Anthropic Messages with a web search server tool and an overloaded (529)
or failing (500) Anthropic deployment. A plain request on those routes still falls back and
gets its answer; a route with only a translating deployment still answers 400.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio
from aiohttp import web

from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.server import FakeServer, InThread
from tests.stacks import Stack
from tests.upstream import FakeOpenAI

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RETRY_AFTER = 7


@dataclass
class LimitedResponses(FakeServer):
    """OpenAI's Responses API: model ``ok`` answers (its id is ``metadata.response_id``),
    model ``limited`` is rate limited (429, ``retry-after: 7``)."""

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/responses", self._responses)

    async def start(self) -> str:
        return f"http://127.0.0.1:{await self.serve()}/v1"

    async def _responses(self, request: web.Request) -> web.Response:
        body = await self.record(request)
        if body.get("model") == "limited":
            error = {
                "message": "Rate limit reached for requests",
                "type": "requests",
                "code": "rate_limit_exceeded",
            }
            headers = {"retry-after": str(RETRY_AFTER)}
            return web.json_response({"error": error}, status=429, headers=headers)
        text = {"type": "output_text", "text": "native", "annotations": []}
        message = {"type": "message", "id": "msg_1", "status": "completed", "role": "assistant"}
        return web.json_response(
            {
                "id": body["metadata"]["response_id"],
                "object": "response",
                "created_at": int(time.time()),
                "status": "completed",
                "model": body["model"],
                "output": [{**message, "content": [text]}],
                "usage": {"input_tokens": 3, "output_tokens": 1, "total_tokens": 4},
            }
        )


@pytest.fixture(scope="module")
def limited() -> Iterator[str]:
    fake = LimitedResponses()
    runner = InThread(fake)
    try:
        yield runner.start(fake.start)
    finally:
        runner.stop()


COMPAT = {"provider": "nonly-compat", "model": "echo"}  # translated: chat completions
ROUTES: dict[str, dict[str, Any]] = {
    "nonly-make": {"deployments": [{"provider": "nonly-openai", "model": "ok"}]},
    "nonly-spare": {"deployments": [COMPAT]},
    "nonly-resp": {
        "deployments": [{"provider": "nonly-openai", "model": "limited"}],
        "fallbacks": ["nonly-spare"],
    },
    "nonly-claude": {
        "deployments": [{"provider": "nonly-anthropic", "model": "overloaded"}, COMPAT]
    },
    # Codex's shape: a self-hosted model first, OpenAI as the fallback.
    "nonly-codex": {"deployments": [COMPAT], "fallbacks": ["nonly-make"]},
    "nonly-claude500": {
        "deployments": [{"provider": "nonly-anthropic", "model": "broken"}],
        "fallbacks": ["nonly-spare"],
    },
}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def routed(
    stack: Stack,
    upstream: FakeOpenAI,
    limited: str,
    claude_fake: tuple[FakeAnthropic, str],
) -> AsyncIterator[Stack]:
    providers = {
        "nonly-openai": {"kind": "openai", "api_base": limited},
        "nonly-anthropic": {"kind": "anthropic", "api_base": claude_fake[1]},
        "nonly-compat": {"kind": "openai-compatible", "api_base": upstream.base_url},
    }
    try:
        for name, provider in providers.items():
            put = await stack.admin("PUT", f"/providers/{name}", provider)
            assert put.status_code in (200, 201), put.text
        for alias, route in ROUTES.items():
            put = await stack.admin("PUT", f"/routes/{alias}", route)
            assert put.status_code in (200, 201), put.text
        yield stack
    finally:
        for alias in ROUTES:
            await stack.admin("DELETE", f"/routes/{alias}")
        for name in providers:
            await stack.admin("DELETE", f"/providers/{name}")


async def _post(stack: Stack, key: str, path: str, body: dict[str, Any]) -> httpx.Response:
    """One request; re-sent while the heads have not seen this module's routes yet (404)."""
    headers = {"Authorization": f"Bearer {key}", "anthropic-version": "2023-06-01"}
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient(base_url=stack.tail_url, timeout=30) as http:
        while True:
            resp = await http.post(path, json=body, headers=headers)
            if resp.status_code != 404 or time.monotonic() > deadline:
                return resp
            await asyncio.sleep(0.2)


def _retry_after(resp: httpx.Response) -> float:
    value = resp.headers.get("retry-after")
    assert value is not None, (resp.status_code, resp.headers, resp.text)
    return float(value)


@pytest.mark.asyncio(loop_scope="session")
async def test_previous_response_id_gets_the_native_429_not_the_translations_400(
    routed: Stack,
) -> None:
    key, _ = await routed.new_key("nonly-responses")
    rid = f"resp_{secrets.token_hex(8)}"
    made = await _post(
        routed,
        key,
        "/v1/responses",
        {"model": "nonly-make", "input": "remember 42", "metadata": {"response_id": rid}},
    )
    assert made.status_code == 200, made.text
    assert made.json()["id"] == rid
    stateful = {"model": "nonly-resp", "input": "what number?", "previous_response_id": rid}

    # The native deployment's 429 (the fallback translates: it cannot continue a response).
    first = await _post(routed, key, "/v1/responses", stateful)
    assert first.status_code == 429, first.text
    assert 0 < _retry_after(first) <= RETRY_AFTER
    assert "previous_response_id" in first.json()["error"]["message"]

    # While it cools down: at once the cooldown's 429, not the fallback's 400.
    cooling = await _post(routed, key, "/v1/responses", stateful)
    assert cooling.status_code == 429, cooling.text
    assert 0 < _retry_after(cooling) <= RETRY_AFTER

    # A request the translation carries still falls back (the native one is cooling down).
    plain = await _post(routed, key, "/v1/responses", {"model": "nonly-resp", "input": "hi"})
    assert plain.status_code == 200, plain.text
    assert plain.json()["output"][0]["content"][0]["text"].endswith("hi")


@pytest.mark.asyncio(loop_scope="session")
async def test_a_route_that_only_translates_still_refuses_400(routed: Stack) -> None:
    key, _ = await routed.new_key("nonly-compat-only")
    refused = await _post(
        routed,
        key,
        "/v1/responses",
        {"model": "nonly-spare", "input": "more", "previous_response_id": "resp_x"},
    )
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["code"] == "unsupported_parameter"
    searching = await _post(routed, key, "/v1/messages", _searching("nonly-spare"))
    assert searching.status_code == 400, searching.text
    assert searching.json()["error"]["type"] == "invalid_request_error"


def _searching(alias: str) -> dict[str, Any]:
    return {
        "model": alias,
        "max_tokens": 32,
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 1}],
    }


@pytest.mark.asyncio(loop_scope="session")
async def test_a_web_search_gets_anthropics_529_then_the_cooldown(routed: Stack) -> None:
    key, _ = await routed.new_key("nonly-messages")
    first = await _post(routed, key, "/v1/messages", _searching("nonly-claude"))
    assert first.status_code == 529, first.text
    assert first.json()["error"]["type"] == "overloaded_error"

    # While the Anthropic deployment cools down: at once a 503 saying when it is back.
    cooling = await _post(routed, key, "/v1/messages", _searching("nonly-claude"))
    assert cooling.status_code == 503, cooling.text
    assert _retry_after(cooling) > 0

    plain = {**_searching("nonly-claude"), "tools": []}
    served = await _post(routed, key, "/v1/messages", plain)
    assert served.status_code == 200, served.text
    assert served.json()["content"][0]["text"].endswith("hi")


@pytest.mark.asyncio(loop_scope="session")
async def test_a_web_search_gets_the_failing_native_deployments_error(routed: Stack) -> None:
    key, _ = await routed.new_key("nonly-broken")
    failed = await _post(routed, key, "/v1/messages", _searching("nonly-claude500"))
    assert failed.status_code == 502, failed.text
    assert failed.json()["error"]["type"] == "api_error"
    # It cools down, but only it can serve a web search: tried again (it was a 503 for the
    # cooldown's length), so the client gets the provider's own failure once more.
    again = await _post(routed, key, "/v1/messages", _searching("nonly-claude500"))
    assert again.status_code == 502, again.text
    assert again.json()["error"]["type"] == "api_error"
    assert "nonly-anthropic--broken: 500" in again.json()["error"]["message"]  # its own status


@pytest.mark.asyncio(loop_scope="session")
async def test_a_custom_tool_is_served_by_the_translating_deployment(routed: Stack) -> None:
    """Codex sends its ``apply_patch`` custom tool on every request: the translation carries
    it, so the self-hosted model answers, not the paid native fallback."""
    key, _ = await routed.new_key("nonly-codex")
    patch = {
        "type": "custom",
        "name": "apply_patch",
        "format": {"type": "grammar", "syntax": "lark", "definition": "start: x"},
    }
    body = {
        "model": "nonly-codex",
        "input": [
            {"role": "user", "content": "edit"},
            {"type": "custom_tool_call", "call_id": "c1", "name": "apply_patch", "input": "x"},
            {"type": "custom_tool_call_output", "call_id": "c1", "output": "ok"},
        ],
        "tools": [patch],
        "metadata": {"response_id": f"resp_{secrets.token_hex(8)}"},  # the native fake's id
    }
    served = await _post(routed, key, "/v1/responses", body)
    assert served.status_code == 200, served.text
    assert served.headers["x-switchyard-deployment"].startswith("nonly-compat"), served.headers
    assert served.json()["output"][0]["content"][0]["text"] == "echo: edit"
    asked = await _post(routed, key, "/v1/responses", {**body, "input": "edit"})
    assert asked.status_code == 200, asked.text
    assert asked.headers["x-switchyard-deployment"].startswith("nonly-compat")
    assert [item["type"] for item in asked.json()["output"]] == ["custom_tool_call"]
