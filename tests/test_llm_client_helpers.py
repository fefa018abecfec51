"""``LLMClient``'s helpers for the other subjects, on the session stack as the internal client
``app`` (real head, model-proxy and fake provider): it had helpers for chat and the model
list only, so an internal service built completions, embeddings and Responses requests on
:meth:`~switchyard.client.LLMClient.request` by hand."""

from __future__ import annotations

import pytest

from switchyard.client import LLMClient
from switchyard.errors import InvalidRequest
from tests.stacks import Stack

pytestmark = pytest.mark.integration


async def test_completions_embeddings_and_responses_are_answered_whole(stack: Stack) -> None:
    nc = await stack.connect("app")
    try:
        async with LLMClient(nc, api_key=stack.api_key) as llm:
            completion = await llm.complete({"model": "gpt-4o-mini", "prompt": "say it"})
            embeddings = await llm.embed(
                {"model": "text-embedding-3-small", "input": ["one", "two"]}
            )
            response = await llm.responses(
                {"model": "gpt-4o-mini", "input": "over nats"}, timeout=30
            )
    finally:
        await nc.close()
    assert completion["object"] == "text_completion"
    assert completion["choices"][0]["text"] == "echo: say it"
    assert embeddings["object"] == "list"
    assert [item["index"] for item in embeddings["data"]] == [0, 1]
    assert embeddings["data"][0]["embedding"] == [0.1, 0.2, 0.3]
    assert (response["object"], response["status"]) == ("response", "completed")
    said = response["output"][0]["content"][0]["text"]
    assert said == "echo: over nats"


async def test_a_helper_refuses_a_body_that_asks_for_a_stream(stack: Stack) -> None:
    """Before anything is sent, as chat() does: the streamed answer's chunks would be read
    as one JSON document."""
    nc = await stack.connect("app")
    try:
        async with LLMClient(nc, api_key=stack.api_key) as llm:
            for helper, body in (
                (llm.complete, {"model": "gpt-4o-mini", "prompt": "x", "stream": True}),
                (llm.responses, {"model": "gpt-4o-mini", "input": "x", "stream": True}),
            ):
                with pytest.raises(InvalidRequest, match=r"use exchange\(\)") as info:
                    await helper(body)
                assert info.value.param == "stream"
    finally:
        await nc.close()
