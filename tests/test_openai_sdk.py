"""The official OpenAI SDK, sync and async, against tail and gateway over real HTTP."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import msgspec
import openai
import pytest

from switchyard.bus import subjects
from switchyard.schemas.health import PREFIX, Cooldown
from switchyard.schemas.routing import deployment_id
from tests.stacks import Stack
from tests.upstream import FakeOpenAI

pytestmark = pytest.mark.integration

MESSAGES: list[Any] = [{"role": "user", "content": "hello world"}]


@pytest.fixture(params=["tail", "gateway"])
def base_url(request: pytest.FixtureRequest, stack: Stack) -> str:
    url = stack.tail_url if request.param == "tail" else stack.gateway_url
    return url + "/v1"


def _sync(stack: Stack, base_url: str, key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key=key or stack.api_key, max_retries=0, timeout=30)


def _async(stack: Stack, base_url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=base_url, api_key=stack.api_key, max_retries=0, timeout=30)


def test_chat(stack: Stack, base_url: str) -> None:
    with _sync(stack, base_url) as client:
        answer = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert answer.choices[0].message.content == "echo: hello world"
    assert answer.usage is not None
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens


async def test_chat_async(stack: Stack, base_url: str) -> None:
    async with _async(stack, base_url) as client:
        answer = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert answer.choices[0].message.content == "echo: hello world"


def test_stream_reassembles_and_reports_usage(stack: Stack, base_url: str) -> None:
    with _sync(stack, base_url) as client:
        stream = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: hello world"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 3


async def test_stream_async_without_usage(stack: Stack, base_url: str) -> None:
    async with _async(stack, base_url) as client:
        stream = await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            stream=True,
        )
        chunks = [c async for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: hello world"
    assert all(c.usage is None for c in chunks)  # not asked for, so not forwarded


def test_completions(stack: Stack, base_url: str) -> None:
    with _sync(stack, base_url) as client:
        answer = client.completions.create(model="gpt-4o-mini", prompt="say hi")
    assert answer.choices[0].text == "echo: say hi"


def test_embeddings(stack: Stack, base_url: str) -> None:
    with _sync(stack, base_url) as client:
        answer = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert [len(d.embedding) for d in answer.data] == [3, 3]


async def test_models(stack: Stack, base_url: str) -> None:
    async with _async(stack, base_url) as client:
        listed = [m.id async for m in client.models.list()]
        one = await client.models.retrieve("gpt-4o-mini")
        with pytest.raises(openai.NotFoundError):
            await client.models.retrieve("no-such-model")
    assert {"gpt-4o-mini", "paced", "demo"} <= set(listed)
    assert one.id == "gpt-4o-mini"


def test_typed_errors(stack: Stack, base_url: str) -> None:
    with _sync(stack, base_url) as client:
        with pytest.raises(openai.BadRequestError) as bad:
            client.chat.completions.create(model="gpt-4o-mini", messages=[])
        assert bad.value.status_code == 400
        with pytest.raises(openai.NotFoundError) as missing:
            client.chat.completions.create(model="no-such-model", messages=MESSAGES)
        assert missing.value.code == "model_not_found"
        with pytest.raises(openai.RateLimitError) as limited:
            client.chat.completions.create(model="err429", messages=MESSAGES)
        # 2 s from the provider; on the second edge the shared cooldown has less left.
        assert limited.value.response.headers["retry-after"] in ("1", "2")
        with pytest.raises(openai.InternalServerError) as unavailable:
            client.chat.completions.create(model="nokey", messages=MESSAGES)
        assert unavailable.value.status_code == 503
        assert "missing-secret" in unavailable.value.message  # names the secret, not a value
        with pytest.raises(openai.InternalServerError) as late:
            client.chat.completions.create(
                model="slow",
                messages=MESSAGES,
                extra_headers={"x-request-timeout": "0.3"},
            )
        assert late.value.status_code == 504
        with pytest.raises(openai.BadRequestError) as rejected:
            client.chat.completions.create(model="err400", messages=MESSAGES)
        assert rejected.value.status_code == 400
        # The field the provider blamed reaches the SDK (it was dropped: null).
        assert rejected.value.param == "messages[0].content"
    with (
        _sync(stack, base_url, key="sk-sy-not-a-real-key") as client,
        pytest.raises(openai.AuthenticationError),
    ):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)


async def test_upstream_failure_is_a_502_and_cools_the_deployment_without_refusing_its_route(
    stack: Stack, upstream: FakeOpenAI
) -> None:
    """The deployment cools down (shared by every head: the route's other deployments would
    take what follows), but ``err500`` has no other: the next request is tried on it all the
    same and gets the provider's own failure. It was refused (503 ``deployments_cooling_down``)
    for ``routing.cooldown_s``, whoever sent the request that failed."""
    dep = deployment_id("fake", "status:500")
    await stack.admin("DELETE", f"/deployments/{dep}/cooldown")
    client = openai.AsyncOpenAI(
        base_url=stack.tail_url + "/v1", api_key=stack.api_key, max_retries=0
    )
    async with client:
        with pytest.raises(openai.InternalServerError) as failed:
            await client.chat.completions.create(model="err500", messages=MESSAGES)
        assert failed.value.status_code == 502
        assert dep in failed.value.message
        nc = await stack.connect("provisioner")
        try:
            kv = await nc.jetstream(timeout=10).key_value(subjects.HEALTH_BUCKET)
            entry = await kv.get(f"{PREFIX}{dep}")
        finally:
            await nc.close()
        cooldown = msgspec.json.decode(entry.value or b"", type=Cooldown)
        assert (cooldown.status, cooldown.asked) == (500, False)
        assert cooldown.until > time.time() + 1
        calls = len(upstream.calls)
        with pytest.raises(openai.InternalServerError) as again:
            await client.chat.completions.create(model="err500", messages=MESSAGES)
        assert again.value.status_code == 502, again.value.message
        assert again.value.code == "all_deployments_failed"
        assert len(upstream.calls) == calls + 1


async def test_the_sdks_read_timeout_is_the_deadline_of_a_whole_answer(
    stack: Stack, base_url: str
) -> None:
    """OpenAI's Python SDK says how long it waits only in ``X-Stainless-Read-Timeout``; for a
    whole answer that is its deadline, ``SDK_GRACE_S`` (1 s) later (past it the SDK has given
    up and, by default, sent the request again), for a stream only the longest gap between
    chunks. The whole answer's model answers in 4 s, far past the 1.2 s deadline (a loaded
    machine must not let it answer first); ``slow``, for the stream, in 1.5 s."""
    headers = {
        "Authorization": f"Bearer {stack.api_key}",
        "x-stainless-read-timeout": "0.2",
    }
    alias = "sdk-read-timeout-slower"
    route = {"deployments": [{"provider": "fake", "model": "slow:4000"}]}
    assert (await stack.admin("PUT", f"/routes/{alias}", route)).status_code == 200
    try:
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
            whole = {"model": alias, "messages": MESSAGES}
            for _ in range(300):  # every head follows the route table on its own
                late = await http.post("/chat/completions", json=whole, headers=headers)
                if late.status_code != 404:
                    break
                await asyncio.sleep(0.1)
            assert late.status_code == 504, late.text
            assert "X-Stainless-Read-Timeout (0.2 s" in late.text, late.text
            stream = {"model": "slow", "messages": MESSAGES, "stream": True}
            streamed = await http.post("/chat/completions", json=stream, headers=headers)
            assert streamed.status_code == 200
            assert streamed.text.rstrip().endswith("data: [DONE]")
    finally:
        await stack.admin("DELETE", f"/routes/{alias}")


def test_the_sdks_own_timeout_raises_its_timeout_error(stack: Stack, base_url: str) -> None:
    """A whole answer later than the SDK's ``timeout`` is the SDK's ``APITimeoutError``, as
    against OpenAI: the edge's 504 for the deadline the SDK announced came at the same moment
    and often first, raised as ``InternalServerError``, which ``except APITimeoutError`` missed
    (``slow`` answers in 1.5 s)."""
    client = openai.OpenAI(base_url=base_url, api_key=stack.api_key, max_retries=0, timeout=0.5)
    with client, pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model="slow", messages=MESSAGES)
