"""What a token count sends to the vendor that counts it, over real HTTP on loopback.

Agents count the very body they are about to send, ``"stream": true`` included, and
Switchyard answers such a count (tests/test_dialects.py). Anthropic's count endpoint takes no
``stream`` and refuses fields it does not take (400 "Extra inputs are not permitted"), so the
field must not reach it; nor OpenAI's, whose count parameters have none either.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aiohttp import web

from switchyard.schemas.routing import Deployment, Provider, ProviderKind
from switchyard.workers.modelproxy.providers.base import ProviderCall
from switchyard.workers.modelproxy.providers.passthrough import Passthrough
from tests.fakes.anthropic import COUNTED, FakeAnthropic
from tests.fakes.server import FakeServer

pytestmark = pytest.mark.integration

MESSAGES = [{"role": "user", "content": "how many?"}]


class FakeOpenAICount(FakeServer):
    """OpenAI's ``POST /v1/responses/input_tokens``, answering 7 and recording the body."""

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/responses/input_tokens", self._count)

    async def _count(self, request: web.Request) -> web.StreamResponse:
        await self.record(request)
        return web.json_response({"object": "response.input_tokens", "input_tokens": 7})


@pytest_asyncio.fixture(loop_scope="session")
async def passthrough() -> AsyncIterator[Passthrough]:
    adapter = Passthrough()
    yield adapter
    await adapter.close()


def _call(op: str, kind: ProviderKind, base: str, body: dict[str, object]) -> ProviderCall:
    return ProviderCall(
        op=op,
        body=body,
        stream=False,
        client_wants_usage=False,
        provider=Provider(kind=kind, api_base=base),
        provider_name=kind,
        deployment=Deployment(provider=kind, model="ok"),
        api_key=None,
        first_token_timeout=10,
        total_timeout=10,
    )


async def test_anthropics_count_gets_no_stream_field(passthrough: Passthrough) -> None:
    """Only counts lose it: a Messages request is passed through as the client wrote it."""
    fake = FakeAnthropic()
    base = await fake.start()
    try:
        body = {"model": "ok", "messages": MESSAGES, "stream": True}
        done = await passthrough.complete(_call("count_tokens", "anthropic", base, body))
        message = {"model": "ok", "max_tokens": 5, "messages": MESSAGES, "stream": False}
        await passthrough.complete(_call("messages", "anthropic", base, message))
    finally:
        await fake.stop()
    assert json.loads(done.body) == {"input_tokens": COUNTED + 1}
    counted, answered = fake.calls
    assert counted.path == "/v1/messages/count_tokens"
    assert counted.body == {"model": "ok", "messages": MESSAGES}
    assert body["stream"] is True  # the client's body itself is left as it was
    assert answered.path == "/v1/messages"
    assert answered.body["stream"] is False


async def test_openais_count_gets_no_stream_field(passthrough: Passthrough) -> None:
    fake = FakeOpenAICount()
    base = f"http://127.0.0.1:{await fake.serve()}/v1"
    try:
        body = {"model": "ok", "input": "count me", "stream": True}
        done = await passthrough.complete(_call("input_tokens", "openai", base, body))
    finally:
        await fake.stop()
    assert json.loads(done.body)["input_tokens"] == 7
    (sent,) = fake.calls
    assert sent.body == {"model": "ok", "input": "count me"}
