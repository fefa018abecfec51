"""A provider's 400 naming a field of the chat request a Responses or Messages request was
translated into tells the client the field of its own request (``param``; Anthropic's message
opens with it), or none, never the chat field: ``messages[1].content`` named the instructions'
neighbour, ``max_tokens`` and ``tools[0].function.name`` nothing a Responses request has.
Through the session stack, whose ``fake`` provider speaks chat completions only (routes added
to its live table for this module)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anthropic
import openai
import pytest
import pytest_asyncio

from tests.stacks import Stack

pytestmark = pytest.mark.integration

# The chat field each route's provider blames (tests/upstream.py SAID), by route.
ROUTES = {
    f"params-{name}": {"deployments": [{"provider": "fake", "model": f"said:param400-{name}"}]}
    for name in ("message", "maxtokens", "tool", "added")
}
WEATHER = {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}
ADDED = "(the provider named `stream_options.include_usage` of the chat completions request"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def routed(stack: Stack) -> AsyncIterator[Stack]:
    try:
        for alias, route in ROUTES.items():
            put = await stack.admin("PUT", f"/routes/{alias}", route)
            assert put.status_code == 200, put.text
        yield stack
    finally:
        for alias in ROUTES:
            await stack.admin("DELETE", f"/routes/{alias}")


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize(
    ("name", "param"),
    [
        ("message", "input[0].content"),  # chat's messages[0] is the instructions
        ("maxtokens", "max_output_tokens"),
        ("tool", "tools[0].name"),
        ("added", None),  # stream_options: the translation's own
    ],
)
async def test_a_responses_client_is_told_its_own_field(
    routed: Stack, name: str, param: str | None, stream: bool
) -> None:
    client = openai.AsyncOpenAI(
        base_url=f"{routed.tail_url}/v1", api_key=routed.api_key, max_retries=0
    )
    body: dict[str, Any] = {
        "model": f"params-{name}",
        "instructions": "be brief",
        "input": [{"role": "user", "content": "hi"}],
        "max_output_tokens": 16,
        "tools": [{"type": "function", **WEATHER}],
    }
    try:
        with pytest.raises(openai.BadRequestError) as refused:
            await client.responses.create(**body, stream=stream)
    finally:
        await client.close()
    assert refused.value.param == param
    assert "upstream refused a field" in refused.value.message
    assert (ADDED in refused.value.message) == (name == "added")


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize(
    ("name", "opening"),
    [
        ("message", "messages[0].content: "),  # chat's messages[0] is the system prompt
        ("maxtokens", "max_tokens: "),
        ("tool", "tools[0].name: "),
        ("added", "upstream refused a field"),  # no field of the client's: none leads
    ],
)
async def test_a_messages_client_is_told_its_own_field(
    routed: Stack, name: str, opening: str, stream: bool
) -> None:
    client = anthropic.AsyncAnthropic(
        base_url=routed.tail_url, api_key=routed.api_key, max_retries=0
    )
    tool = {"name": WEATHER["name"], "input_schema": WEATHER["parameters"]}
    try:
        with pytest.raises(anthropic.BadRequestError) as refused:
            await client.messages.create(
                model=f"params-{name}",
                system="be brief",
                messages=[{"role": "user", "content": "hi"}],
                max_tokens=16,
                tools=[tool],  # type: ignore[list-item]
                stream=stream,
            )
    finally:
        await client.close()
    body = refused.value.body
    assert isinstance(body, dict), body
    message = body["error"]["message"]
    assert message.startswith(opening), message
    assert (ADDED in message) == (name == "added"), message
