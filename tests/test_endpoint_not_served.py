"""A legacy ``/v1/completions`` call to deployments that serve only chat, on the session stack.

OpenAI answers a chat model on that endpoint 404 ("This is a chat model and not supported in
the v1/completions endpoint", ``param: model``), vLLM "The model does not support Completions
API". Both were taken for the deployment's model being gone: one tenant's call was a
retryable 502 ``all_deployments_failed`` and cooled every deployment of the route (status
404) for everyone's chat. Now a deployment whose provider says it does not serve the endpoint
is skipped without cooling: the route's others are tried, and when none serves it the client
gets a 400 ``endpoint_not_supported`` naming the endpoint and the route. A bare HTML
``404 Not Found`` says no such thing (an ingress whose backend died answers it): that
deployment is cooled and the client's answer is a 502, as on chat. A fake provider over real
HTTP (serving chat, refusing completions each way) and the session's fake OpenAI (serving
both).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from aiohttp import web
from nats.js.errors import NoKeysError

from switchyard.bus import subjects
from switchyard.schemas.health import PREFIX
from switchyard.schemas.routing import deployment_id
from tests.fakes.server import FakeServer, InThread
from tests.stacks import Stack
from tests.upstream import FakeOpenAI

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHAT_MODEL_404 = {
    "error": {
        "message": "This is a chat model and not supported in the v1/completions endpoint. "
        "Did you mean to use v1/chat/completions?",
        "type": "invalid_request_error",
        "param": "model",
        "code": None,
    }
}


class ChatOnly(FakeServer):
    """Serves chat; answers completions 404, as OpenAI does for a chat model (model
    ``openai-chat``), as vLLM does for a model without completions (``vllm-chat``), or as an
    ingress whose backend is down does (any other model: nginx's HTML page)."""

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._completions)

    async def start(self) -> str:
        return f"http://127.0.0.1:{await self.serve()}/v1"

    async def _chat(self, request: web.Request) -> web.Response:
        body = await self.record(request)
        return web.json_response(
            {
                "id": "chatcmpl-chatonly",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "chat works"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
            }
        )

    async def _completions(self, request: web.Request) -> web.Response:
        body = await self.record(request)
        if body["model"] == "openai-chat":
            return web.json_response(CHAT_MODEL_404, status=404)
        if body["model"] == "vllm-chat":
            return web.json_response(VLLM_404, status=404)
        return web.Response(text=NGINX_404, status=404, content_type="text/html")


VLLM_404 = {
    "object": "error",
    "message": "The model does not support Completions API",
    "type": "NotFoundError",
    "param": None,
    "code": 404,
}
NGINX_404 = (
    "<html><head><title>404 Not Found</title></head><body><center><h1>404 Not Found</h1>"
    "</center><hr><center>nginx</center></body></html>"
)
OPENAI_LIKE = {"provider": "chatonly", "model": "openai-chat"}
VLLM_LIKE = {"provider": "chatonly", "model": "vllm-chat"}
DEAD = {"provider": "chatonly", "model": "dead-backend"}
ROUTES: dict[str, dict[str, Any]] = {
    "nocmpl-both": {"deployments": [OPENAI_LIKE, VLLM_LIKE]},
    "nocmpl-one": {"deployments": [OPENAI_LIKE]},
    "nocmpl-dead": {"deployments": [DEAD]},
    "nocmpl-mixed": {
        "deployments": [
            {**VLLM_LIKE, "weight": 1_000_000},
            {"provider": "fake", "model": "echo", "weight": 1},
        ]
    },
}


@pytest.fixture(scope="module")
def chat_only() -> Iterator[tuple[ChatOnly, str]]:
    fake = ChatOnly()
    runner = InThread(fake)
    try:
        yield fake, runner.start(fake.start)
    finally:
        runner.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def routed(
    stack: Stack, upstream: FakeOpenAI, chat_only: tuple[ChatOnly, str]
) -> AsyncIterator[Stack]:
    providers = {"chatonly": {"kind": "openai-compatible", "api_base": chat_only[1]}}
    async with stack.live_routes(ROUTES, providers):
        for alias in ROUTES:
            resp = await _post(stack, "/v1/chat/completions", _chat(alias), f"nocmpl-warm-{alias}")
            assert resp.status_code == 200, resp.text
        yield stack


async def _post(stack: Stack, path: str, body: dict[str, Any], request_id: str) -> httpx.Response:
    """One request; re-sent while the heads have not seen this module's routes yet (404)."""
    headers = {"Authorization": f"Bearer {stack.api_key}", "X-Request-Id": request_id}
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient(base_url=stack.tail_url, timeout=30) as http:
        while True:
            resp = await http.post(path, json=body, headers=headers)
            if resp.status_code != 404 or time.monotonic() > deadline:
                return resp
            if resp.json()["error"].get("code") != "model_not_found":
                return resp
            await asyncio.sleep(0.2)


def _chat(alias: str) -> dict[str, Any]:
    return {"model": alias, "messages": [{"role": "user", "content": "hi"}]}


def _completion(alias: str, **fields: Any) -> dict[str, Any]:
    return {"model": alias, "prompt": "Say hi", "max_tokens": 5, **fields}


async def _cooling(stack: Stack) -> list[str]:
    nc = await stack.connect("provisioner")
    try:
        health = await nc.jetstream(timeout=10).key_value(subjects.HEALTH_BUCKET)
        try:
            return list(await health.keys())
        except NoKeysError:  # (nats-py's answer for an empty bucket)
            return []
    finally:
        await nc.close()


def _completion_calls(fake: ChatOnly, model: str) -> int:
    return sum(1 for c in fake.calls if c.path == "/v1/completions" and c.body["model"] == model)


@pytest.mark.asyncio(loop_scope="session")
@pytest.mark.parametrize("stream", [False, True])
async def test_no_deployment_serving_completions_is_a_400_and_cools_nothing(
    routed: Stack, chat_only: tuple[ChatOnly, str], stream: bool
) -> None:
    fake = chat_only[0]
    before = {m: _completion_calls(fake, m) for m in ("openai-chat", "vllm-chat")}
    got = await _post(
        routed, "/v1/completions", _completion("nocmpl-both", stream=stream), f"nocmpl-{stream}"
    )
    assert got.status_code == 400, got.text[:400]
    assert "x-should-retry" not in got.headers  # a 400: no SDK retries it anyway
    error = got.json()["error"]
    assert error["code"] == "endpoint_not_supported", error
    assert error["param"] == "model", error
    assert "`nocmpl-both`" in error["message"], error  # the route
    assert "/v1/completions" in error["message"], error  # the endpoint
    assert "chat model" in error["message"], error  # the provider's own words
    # Each deployment asked once (the route's other deployment was tried), neither cooled.
    for model in ("openai-chat", "vllm-chat"):
        assert _completion_calls(fake, model) == before[model] + 1, model
    cooling = await _cooling(routed)
    for dep in (OPENAI_LIKE, VLLM_LIKE):
        assert f"{PREFIX}{deployment_id(dep['provider'], dep['model'])}" not in cooling
    # Another tenant's chat on the route is served by both deployments, as before.
    served = set()
    for n in range(12):
        chat = await _post(routed, "/v1/chat/completions", _chat("nocmpl-both"), f"nocmpl-c{n}")
        assert chat.status_code == 200, chat.text[:300]
        assert chat.headers["x-switchyard-attempts"] == "1"
        served.add(chat.headers["x-switchyard-deployment"])
    assert len(served) == 2, served


@pytest.mark.asyncio(loop_scope="session")
async def test_a_route_of_one_deployment_names_itself_in_the_400(routed: Stack) -> None:
    got = await _post(routed, "/v1/completions", _completion("nocmpl-one"), "nocmpl-one")
    assert got.status_code == 400, got.text[:400]
    error = got.json()["error"]
    assert error["code"] == "endpoint_not_supported", error
    assert "`nocmpl-one`" in error["message"], error
    assert "/v1/completions" in error["message"], error
    dep = deployment_id(OPENAI_LIKE["provider"], OPENAI_LIKE["model"])
    assert f"{PREFIX}{dep}" not in await _cooling(routed)


@pytest.mark.asyncio(loop_scope="session")
async def test_a_deployment_that_serves_completions_answers_them(routed: Stack) -> None:
    """The weights pick the chat-only deployment 1,000,000 to 1: the other one answers."""
    got = await _post(routed, "/v1/completions", _completion("nocmpl-mixed"), "nocmpl-mixed")
    assert got.status_code == 200, got.text[:400]
    assert got.json()["choices"][0]["text"].startswith("echo:")
    assert got.headers["x-switchyard-deployment"] == deployment_id("fake", "echo")
    assert f"{PREFIX}{deployment_id('chatonly', 'vllm-chat')}" not in await _cooling(routed)


@pytest.mark.asyncio(loop_scope="session")
async def test_a_bare_404_on_completions_cools_the_deployment(routed: Stack) -> None:
    """An ingress's "404 Not Found" says nothing of the endpoint (its backend may be down):
    the deployment is cooled and the client gets the 502 of a failed deployment, not a 400
    blaming the model that cooled nothing and raised no alert."""
    got = await _post(routed, "/v1/completions", _completion("nocmpl-dead"), "nocmpl-dead")
    assert got.status_code == 502, got.text[:400]
    assert got.json()["error"]["code"] != "endpoint_not_supported", got.text[:400]
    assert "<html" not in got.text  # the proxy's page is not passed on as HTML
    dep = deployment_id(DEAD["provider"], DEAD["model"])
    assert f"{PREFIX}{dep}" in await _cooling(routed)
