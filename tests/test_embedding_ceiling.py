"""Embedding batches whose answer is larger than the edges take, on the session stack.

An embeddings answer travels to the edge as one NATS message (8 MiB less 16 KiB for headers),
or in parts up to ``ingress.max_answer_bytes`` (24 MiB here; tests/test_answer_parts.py). Past
one message (as it was then), 400 inputs of 1,536 dimensions as floats (~13 MB, as OpenAI
writes them) were a 502 ``answer_too_large`` telling the client to "stream it" (embeddings
cannot be streamed) and, although the provider did the work and charges for it, billed
nothing: a key could run up provider cost Switchyard never counted. Now the message says how
many inputs of that size fit (and that base64 is smaller), and the call is billed its prompt's
estimate. It is a 413 with ``x-should-retry: false``: as a 502, the OpenAI SDK sent it three
times, each call billed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import openai
import pytest
import pytest_asyncio

from tests.stacks import Stack
from tests.upstream import FakeOpenAI

pytestmark = pytest.mark.integration

ROUTES = {
    "embed-wide": {"deployments": [{"provider": "fake", "model": "dims:1536"}]},
    "embed-sdk": {"deployments": [{"provider": "fake", "model": "dims:1537"}]},  # (own calls)
}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def routed(stack: Stack) -> AsyncIterator[Stack]:
    async with stack.live_routes(ROUTES):
        async with httpx.AsyncClient(base_url=stack.tail_url, timeout=60) as http:
            for model in ROUTES:
                for n in range(150):  # every head and model-proxy follows the table on its own
                    probe = await _embed(http, stack, 1, "float", f"embedceil-probe{n}", model)
                    if probe.status_code == 200:
                        break
                    await asyncio.sleep(0.2)
                assert probe.status_code == 200, probe.text
        yield stack


async def _embed(
    http: httpx.AsyncClient,
    stack: Stack,
    inputs: int,
    encoding: str,
    request_id: str,
    model: str = "embed-wide",
) -> httpx.Response:
    return await http.post(
        "/v1/embeddings",
        json={
            "model": model,
            "input": [f"text number {i}" for i in range(inputs)],
            "encoding_format": encoding,
        },
        headers={"Authorization": f"Bearer {stack.api_key}", "X-Request-Id": request_id},
    )


@pytest.mark.asyncio(loop_scope="session")
async def test_an_embeddings_answer_too_large_says_what_fits_and_is_billed(routed: Stack) -> None:
    async with httpx.AsyncClient(base_url=routed.tail_url, timeout=60) as http:
        over = await _embed(http, routed, 1000, "float", "embedceil-over")
    # A 413 the SDKs do not retry: a 502 each sent three times, each a billed provider call.
    assert over.status_code == 413, over.text[:300]
    assert over.headers["x-should-retry"] == "false", over.headers
    error = over.json()["error"]
    assert error["code"] == "answer_too_large", error
    assert error["type"] == "invalid_request_error", error
    assert "stream it" not in error["message"], error  # embeddings are never streamed
    assert "inputs of this size fit" in error["message"], error
    fit = int(error["message"].split("(about ")[1].split(" ")[0])
    assert 600 < fit < 800, error  # ~23 bytes a dimension: ~710 of 1,536 in 24 MiB
    assert "encoding_format base64" in error["message"], error
    event = await routed.usage_of("embedceil-over")
    assert event is not None, "an answer the provider gave (and charges for) went unbilled"
    assert event.status == 413
    assert event.prompt_tokens > 0
    assert event.prompt_tokens_estimated == event.prompt_tokens  # the estimate, said so
    assert event.completion_tokens == 0


@pytest.mark.asyncio(loop_scope="session")
async def test_a_thousand_inputs_of_1536_dimensions_fit_as_base64(routed: Stack) -> None:
    """The OpenAI SDK asks for base64 by default, and LangChain sends 1,000 inputs a call:
    they fit; ~3,050 fit in the 24 MiB the session stack's edges take."""
    async with httpx.AsyncClient(base_url=routed.tail_url, timeout=60) as http:
        fits = await _embed(http, routed, 1000, "base64", "embedceil-base64")
        too_many = await _embed(http, routed, 3300, "base64", "embedceil-base64-over")
    assert fits.status_code == 200, fits.text[:300]
    assert len(fits.json()["data"]) == 1000
    assert too_many.status_code == 413, too_many.text[:300]
    message = too_many.json()["error"]["message"]
    assert "encoding_format base64" not in message, message  # it already was
    assert "(about 30" in message, message  # ~3,050 of them fit


@pytest.mark.asyncio(loop_scope="session")
async def test_the_openai_sdk_sends_an_answer_too_large_once(
    routed: Stack, upstream: FakeOpenAI
) -> None:
    """The SDK's default two retries were two more provider calls, billed, for answers no
    client would ever receive: 1,500 float inputs of 1,536 dimensions were sent 3 times."""
    before = len(upstream.calls_for("dims:1537"))
    sdk = openai.AsyncOpenAI(api_key=routed.api_key, base_url=f"{routed.tail_url}/v1")
    with pytest.raises(openai.APIStatusError) as raised:
        await sdk.embeddings.create(
            model="embed-sdk",
            input=[f"text number {i}" for i in range(1500)],
            encoding_format="float",
        )
    await sdk.close()
    assert raised.value.status_code == 413
    assert raised.value.code == "answer_too_large"
    assert len(upstream.calls_for("dims:1537")) == before + 1, "the SDK retried it"
