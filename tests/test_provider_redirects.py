"""Provider calls do not follow redirects, over real HTTP on loopback: a provider that answers
307 to a second server never gets the request (its prompt and the deployment's key) sent
there, on the direct OpenAI-compatible path (Azure's ``api-key`` included) and through every
kind of client litellm makes (its own handler, the OpenAI SDK's). The failure is a 502 that
says so, without the key or the address the redirect named."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import pytest_asyncio
from aiohttp import web

from switchyard.errors import ApiError, ProviderError
from switchyard.schemas.routing import Deployment, Provider
from switchyard.schemas.secret import Secret
from switchyard.workers.modelproxy.providers import upstream_errors as ue
from switchyard.workers.modelproxy.providers.base import Adapter, ProviderCall
from switchyard.workers.modelproxy.providers.litellm_adapter import LiteLLM
from switchyard.workers.modelproxy.providers.openai_compat import OpenAICompatible
from switchyard.workers.modelproxy.providers.passthrough import Passthrough
from switchyard.workers.modelproxy.providers.redirects import REDIRECT_CODE
from tests.fakes.server import FakeServer, Recorded

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:Items? .* using the `ReadOnly` qualifier:UserWarning"),
]

KEY = "swy-test-redirect-Kq7ZxP2vW9"
IN_LOCATION = "sig=LOCATION-CANARY"  # what a redirect's address may carry


@dataclass
class Elsewhere(FakeServer):
    """Where the provider redirects to: answers anything, records every request."""

    def routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/{tail:.*}", self._any)

    async def _any(self, request: web.Request) -> web.Response:
        self.calls.append(await _recorded(request))
        return web.json_response({"error": {"message": "should never be reached"}}, status=500)


@dataclass
class Redirecting(FakeServer):
    """A provider answering every request with 307 to the same path on :attr:`target`."""

    target: str = ""

    def routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/{tail:.*}", self._any)

    async def _any(self, request: web.Request) -> web.Response:
        self.calls.append(await _recorded(request))
        location = f"{self.target}{request.path}?{IN_LOCATION}"
        return web.Response(status=307, headers={"Location": location}, text="moved")


async def _recorded(request: web.Request) -> Recorded:
    return Recorded(request.path_qs, dict(request.headers), await request.read())


@dataclass
class Servers:
    provider: Redirecting
    elsewhere: Elsewhere
    base: str


@pytest_asyncio.fixture(loop_scope="session")
async def servers() -> AsyncIterator[Servers]:
    elsewhere = Elsewhere()
    target = f"http://127.0.0.1:{await elsewhere.serve()}"
    provider = Redirecting(target=target)
    base = f"http://127.0.0.1:{await provider.serve()}"
    yield Servers(provider, elsewhere, base)
    await provider.stop()
    await elsewhere.stop()


def _call(
    kind: str, model: str, base: str, *, op: str = "chat", stream: bool = False
) -> ProviderCall:
    body: dict[str, object] = {"model": model}
    if op == "chat":
        body["messages"] = [{"role": "user", "content": "a prompt for the provider only"}]
    else:
        body["input"] = ["a text for the provider only"]
    version = "2024-10-21" if kind == "azure" else None
    return ProviderCall(
        op=op,
        body=body,
        stream=stream,
        client_wants_usage=False,
        provider=Provider(kind=kind, api_base=base, secret="k", api_version=version),  # type: ignore[arg-type]
        provider_name="moving",
        deployment=Deployment(provider="moving", model=model),
        api_key=Secret(KEY, name="k"),
        first_token_timeout=10.0,
        total_timeout=10.0,
    )


async def _run(adapter: Adapter, call: ProviderCall) -> None:
    if call.stream:
        [event async for event in adapter.stream(call)]
    else:
        await adapter.complete(call)


async def _failure(adapter: Adapter, call: ProviderCall) -> ApiError:
    with pytest.raises(ApiError) as info:
        await _run(adapter, call)
    return info.value


def _check(failure: ApiError, servers: Servers) -> None:
    assert servers.elsewhere.calls == []  # neither the prompt nor the key went there
    assert len(servers.provider.calls) == 1  # asked once, not retried in the adapter
    assert isinstance(failure, ProviderError)
    assert (failure.status, failure.code, failure.upstream_status) == (502, REDIRECT_CODE, 307)
    assert ue.retryable(failure)  # the deployment's failure: another one may answer
    assert "HTTP 307" in failure.message
    assert "redirect" in failure.message
    for secret in (KEY, IN_LOCATION, "127.0.0.1"):
        assert secret not in failure.message


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("kind", ["openai-compatible", "azure"])
async def test_the_direct_path_does_not_follow_a_redirect(
    servers: Servers, kind: str, stream: bool
) -> None:
    adapter = OpenAICompatible()
    try:
        base = f"{servers.base}/v1" if kind != "azure" else servers.base
        failure = await _failure(adapter, _call(kind, "m", base, stream=stream))
    finally:
        await adapter.close()
    _check(failure, servers)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def litellm() -> AsyncIterator[LiteLLM]:
    adapter = LiteLLM()
    yield adapter
    await adapter.close()


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize(
    ("kind", "model"),
    [
        ("anthropic", "claude-x"),  # x-api-key, litellm's own handler
        ("gemini", "gemini-1.5-flash"),  # x-goog-api-key
        ("cohere", "command-r"),  # ignores a handler passed per call
        ("mistral", "mistral-small"),  # the OpenAI SDK's client
        ("litellm", "openai/gpt-4o"),
    ],
)
async def test_litellm_does_not_follow_a_redirect(
    litellm: LiteLLM, servers: Servers, kind: str, model: str, stream: bool
) -> None:
    failure = await _failure(litellm, _call(kind, model, servers.base, stream=stream))
    _check(failure, servers)


@pytest.mark.parametrize(("kind", "model"), [("gemini", "text-embedding-004"), ("mistral", "e")])
async def test_litellm_embeddings_do_not_follow_a_redirect(
    litellm: LiteLLM, servers: Servers, kind: str, model: str
) -> None:
    failure = await _failure(litellm, _call(kind, model, servers.base, op="embed"))
    _check(failure, servers)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize(("kind", "op"), [("anthropic", "messages"), ("openai", "responses")])
async def test_the_native_passthrough_does_not_follow_a_redirect(
    servers: Servers, kind: str, op: str, stream: bool
) -> None:
    adapter = Passthrough()
    call = _call(kind, "m", f"{servers.base}/v1", stream=stream)
    body = {"model": "m", "max_tokens": 5, "messages": call.body["messages"], "input": "x"}
    try:
        failure = await _failure(adapter, dataclasses.replace(call, op=op, body=body))
    finally:
        await adapter.close()
    _check(failure, servers)
