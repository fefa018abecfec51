"""Native Anthropic and Responses providers routed on the session stack for one test module,
and the streamed requests those modules send them (shared by the pass-through error tests)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx

from tests.stacks import Stack


def native_providers(claude: str, claude_url: str, openai: str, openai_url: str) -> dict[str, Any]:
    """A native Anthropic provider and a native OpenAI one, each keyed by a secret of its name."""
    return {
        claude: {"kind": "anthropic", "api_base": claude_url, "secret": claude},
        openai: {"kind": "openai", "api_base": openai_url, "secret": openai},
    }


def failing_first(routes: dict[str, tuple[str, str]]) -> dict[str, list[dict[str, Any]]]:
    """Alias -> (provider, failing model) as routes: the failing deployment weighs a million
    times its provider's ``ok`` one, so the first attempt goes there and ``ok`` is left."""
    return {
        alias: [
            {"provider": provider, "model": model, "weight": 1_000_000},
            {"provider": provider, "model": "ok", "weight": 1},
        ]
        for alias, (provider, model) in routes.items()
    }


@contextlib.asynccontextmanager
async def native_routes(
    stack: Stack,
    providers: dict[str, dict[str, Any]],
    routes: dict[str, list[dict[str, Any]]],
    ready: Callable[[], Awaitable[bool]],
) -> AsyncIterator[Stack]:
    """``providers`` (each with a stored key of its own name) and ``routes`` on ``stack``
    until the block ends; entered once ``ready()`` says every process follows the table."""
    try:
        for name, doc in providers.items():
            stored = await stack.admin("PUT", f"/secrets/{name}", {"value": f"sk-{name}"})
            assert stored.status_code in (200, 201), stored.text
            assert (await stack.admin("PUT", f"/providers/{name}", doc)).status_code == 200
        for alias, deployments in routes.items():
            route = {"deployments": deployments}
            assert (await stack.admin("PUT", f"/routes/{alias}", route)).status_code == 200
        for _ in range(300):  # every head and model-proxy follows the table on its own
            if await ready():
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # the rest of the table, written before it
        yield stack
    finally:
        for alias in routes:
            await stack.admin("DELETE", f"/routes/{alias}")
        for name in providers:
            await stack.admin("DELETE", f"/providers/{name}")
            await stack.admin("DELETE", f"/secrets/{name}?force=true")


async def stream_messages(stack: Stack, alias: str, request_id: str) -> httpx.Response:
    """A streamed Anthropic Messages request to the tail, read whole."""
    async with httpx.AsyncClient(base_url=stack.tail_url, timeout=30) as http:
        return await http.post(
            "/v1/messages",
            json={
                "model": alias,
                "max_tokens": 32,
                "stream": True,
                "messages": [{"role": "user", "content": "hi"}],
            },
            headers={
                "x-api-key": stack.api_key,
                "anthropic-version": "2023-06-01",
                "X-Request-Id": request_id,
            },
        )


async def stream_responses(stack: Stack, alias: str, request_id: str) -> httpx.Response:
    """A streamed OpenAI Responses request to the tail, read whole."""
    async with httpx.AsyncClient(base_url=stack.tail_url, timeout=30) as http:
        return await http.post(
            "/v1/responses",
            json={"model": alias, "input": "hi", "stream": True},
            headers={"Authorization": f"Bearer {stack.api_key}", "X-Request-Id": request_id},
        )
