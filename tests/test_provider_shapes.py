"""What servers that speak OpenAI's API answer in their own shapes, on the direct path: the
official SDK's view through the session stack (routes added to its live table for this module).

An explorer found a 200 answer holding an error passed on as a success (the SDK's
``choices[0]`` failed in the client's code), JSON cut short passed on, vLLM's and Azure's error
bodies replaced by "answered HTTP 400", a plain-text error lost, and a stream asked for two
choices taken for whole when the second was cut.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import openai
import pytest
import pytest_asyncio
from openai.types.chat import ChatCompletionMessageParam

from tests.stacks import Stack
from tests.upstream import FakeOpenAI

pytestmark = pytest.mark.integration

ROUTES = {
    "shapes-error200": {
        "deployments": [{"provider": "fake", "model": "said:error200"}],
        "fallbacks": ["gpt-4o-mini"],
    },
    "shapes-error200-only": {"deployments": [{"provider": "fake", "model": "said:error200"}]},
    "shapes-cut200-only": {"deployments": [{"provider": "fake", "model": "said:cut200"}]},
    "shapes-vllm400": {"deployments": [{"provider": "fake", "model": "said:vllm400"}]},
    "shapes-filter400": {"deployments": [{"provider": "fake", "model": "said:filter400"}]},
    "shapes-text400": {"deployments": [{"provider": "fake", "model": "said:text400"}]},
    "shapes-twocut": {"deployments": [{"provider": "fake", "model": "twocut"}]},
    "shapes-twoinone": {"deployments": [{"provider": "fake", "model": "twoinone"}]},
    "shapes-whole": {
        "deployments": [{"provider": "fake", "model": "said:whole200"}],
        "fallbacks": ["gpt-4o-mini"],
    },
    "shapes-sseasjson": {"deployments": [{"provider": "fake", "model": "said:sseasjson"}]},
    "shapes-nov1": {"deployments": [{"provider": "shapes-nov1", "model": "echo"}]},
}
HI: list[ChatCompletionMessageParam] = [{"role": "user", "content": "rescued"}]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def shaped(stack: Stack, upstream: FakeOpenAI) -> AsyncIterator[openai.AsyncOpenAI]:
    # A newcomer's api_base without the /v1 the server serves under.
    nov1 = {"kind": "openai-compatible", "api_base": upstream.base_url.removesuffix("/v1")}
    try:
        put = await stack.admin("PUT", "/providers/shapes-nov1", nov1)
        assert put.status_code == 200, put.text
        for alias, route in ROUTES.items():
            put = await stack.admin("PUT", f"/routes/{alias}", route)
            assert put.status_code == 200, put.text
        client = openai.AsyncOpenAI(
            base_url=f"{stack.tail_url}/v1", api_key=stack.api_key, max_retries=0
        )
        try:
            yield client
        finally:
            await client.close()
    finally:
        for alias in ROUTES:
            await stack.admin("DELETE", f"/routes/{alias}")
        await stack.admin("DELETE", "/providers/shapes-nov1")


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_an_error_answered_with_200_is_the_providers_failure(
    shaped: openai.AsyncOpenAI, stream: bool
) -> None:
    """Tried elsewhere (the fallback's echo answers); alone, a 502 in the provider's words."""
    if stream:
        chunks = await shaped.chat.completions.create(
            model="shapes-error200", messages=HI, stream=True
        )
        text = "".join([c.choices[0].delta.content or "" async for c in chunks if c.choices])
    else:
        answer = await shaped.chat.completions.create(model="shapes-error200", messages=HI)
        text = answer.choices[0].message.content or ""
    assert text == "echo: rescued"
    with pytest.raises(openai.APIStatusError) as failed:
        await shaped.chat.completions.create(
            model="shapes-error200-only", messages=HI, stream=stream
        )
    assert failed.value.status_code == 502
    assert "answered 200 with an error: The server had an error" in failed.value.message


async def test_json_cut_short_is_the_providers_failure(shaped: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as failed:
        await shaped.chat.completions.create(model="shapes-cut200-only", messages=HI)
    assert failed.value.status_code == 502
    assert "JSON that does not parse" in failed.value.message


@pytest.mark.parametrize(
    ("alias", "said", "code", "param"),
    [
        ("shapes-vllm400", "This model's maximum context length is 4096 tokens.", None, None),
        ("shapes-filter400", "The response was filtered", "content_filter", "prompt"),
        ("shapes-text400", "upstream refused: prompt too long for this server", None, None),
    ],
    ids=["vllm", "azure-content-filter", "plain-text"],
)
async def test_a_providers_error_reaches_the_client_in_its_own_words(
    shaped: openai.AsyncOpenAI, alias: str, said: str, code: str | None, param: str | None
) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        await shaped.chat.completions.create(model=alias, messages=HI)
    assert said in refused.value.message
    assert refused.value.code == (code or "provider_rejected_request")
    assert refused.value.param == param


async def test_a_stream_of_two_choices_cut_in_the_second_is_not_whole(
    shaped: openai.AsyncOpenAI,
) -> None:
    """The first choice's finish_reason no longer ends the answer: the second was cut."""
    chunks = await shaped.chat.completions.create(
        model="shapes-twocut", messages=HI, stream=True, n=2
    )
    seen: list[tuple[int, str | None]] = []

    async def read() -> None:
        async for chunk in chunks:
            seen.extend((c.index, c.delta.content) for c in chunk.choices)

    with pytest.raises(openai.APIError) as cut:
        await read()
    assert seen == [(0, "one"), (1, "half")]
    assert "ended its stream before the answer was complete" in str(cut.value)


async def test_a_stream_of_two_choices_in_one_chunk_is_whole(shaped: openai.AsyncOpenAI) -> None:
    """The second choice's finish_reason, in a chunk whose first choice has none, counts."""
    chunks = await shaped.chat.completions.create(
        model="shapes-twoinone", messages=HI, stream=True, n=2
    )
    seen = [(c.index, c.finish_reason) async for chunk in chunks for c in chunk.choices]
    assert seen == [(0, None), (1, "stop"), (0, "stop")]


async def test_an_api_base_without_v1_is_named_in_the_error(shaped: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as failed:
        await shaped.chat.completions.create(model="shapes-nov1", messages=HI)
    assert failed.value.status_code == 502
    assert "answered HTTP 404 for /chat/completions" in failed.value.message
    assert "does its api_base lack /v1?" in failed.value.message


async def test_a_server_that_does_not_stream_has_its_answer_streamed(
    shaped: openai.AsyncOpenAI,
) -> None:
    """Its whole JSON answer to a streamed request was the attempt's failure (the call paid
    for, thrown away, and tried elsewhere every time): it is now streamed as the events a
    streaming server sends, usage included when asked for. An event stream labelled as JSON
    is read as one."""
    chunks = await shaped.chat.completions.create(
        model="shapes-whole", messages=HI, stream=True, stream_options={"include_usage": True}
    )
    seen = [chunk async for chunk in chunks]
    text = "".join(c.choices[0].delta.content or "" for c in seen if c.choices)
    assert text == "a whole answer"
    assert [c.choices[0].finish_reason for c in seen if c.choices] == ["stop"]
    assert seen[-1].usage is not None
    assert seen[-1].usage.total_tokens == 4
    labelled = await shaped.chat.completions.create(
        model="shapes-sseasjson", messages=HI, stream=True
    )
    said = "".join([c.choices[0].delta.content or "" async for c in labelled if c.choices])
    assert said == "labelled"
