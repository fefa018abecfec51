"""A provider's 400 naming a field of the chat request a Responses or Messages request was
translated into tells the client the field of its own request (``param``, and in the message
the provider's words name it too; Anthropic's message opens with it unless it names it), or
none, never the chat field: ``messages[1].content`` named the instructions' neighbour,
``max_tokens`` and ``tools[0].function.name`` nothing a Responses request has, and a Messages
client read two different turns in one message.
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
    for name in ("message", "dotted", "maxtokens", "tool", "added")
}
WEATHER = {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}
ADDED = "(the provider named `stream_options.include_usage` of the chat completions request"
SAID = "upstream refused a field: Invalid value for "  # then the field, quoted


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
        ("dotted", "input[0].content"),  # the message says `messages.1.content`
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
    shown = refused.value.body
    assert isinstance(shown, dict), shown
    told = shown["message"]
    if param is None:
        assert told.startswith(f"{SAID}'stream_options.include_usage' {ADDED}"), told
    else:
        assert told == f"{SAID}'{param}'", told


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize(
    ("name", "own"),
    [
        ("message", "messages[0].content"),  # chat's messages[0] is the system prompt
        ("dotted", "messages[0].content"),
        ("maxtokens", "max_tokens"),
        ("tool", "tools[0].name"),
        ("added", None),  # no field of the client's: none leads
    ],
)
async def test_a_messages_client_is_told_its_own_field(
    routed: Stack, name: str, own: str | None, stream: bool
) -> None:
    """The message names one field, the client's (it read ``messages[0].content: ... Invalid
    value for 'messages[1].content'``, two different turns), and none leads it: the message
    names it already."""
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
    if own is None:
        assert message.startswith(f"{SAID}'stream_options.include_usage' {ADDED}"), message
    else:
        assert message == f"{SAID}'{own}'", message
