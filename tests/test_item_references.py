"""``item_reference`` input items on a translating deployment (the Vercel AI SDK's second turn).

The AI SDK's Responses provider defaults to ``store: true`` and, from a conversation's second
turn, sends earlier output items as ``{"type": "item_reference", "id": ...}``: assistant
messages, and (before its June 2026 releases) function calls. On the session stack, with a
route to the fake chat provider (translated): turn 1 over HTTP, whole and streamed; turn 2
references its message and function call items, and the provider receives the history filled
in. Items are the tenant's: another key of the same team reads them, a key of another tenant
gets OpenAI's 404 naming the id (never forwarded), and so does a reference to an answer made
with ``store: false``.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from tests.stacks import Stack
from tests.upstream import FakeOpenAI

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ALIAS = "itemref"
MODEL = "echo:itemref"  # the fake's calls for this module are told apart by it
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def route(stack: Stack) -> AsyncIterator[str]:
    route = {"deployments": [{"provider": "fake", "model": MODEL}]}
    put = await stack.admin("PUT", f"/routes/{ALIAS}", route)
    assert put.status_code in (200, 201), put.text
    try:
        yield ALIAS
    finally:
        await stack.admin("DELETE", f"/routes/{ALIAS}")


async def _post(http: httpx.AsyncClient, key: str, body: dict[str, Any]) -> httpx.Response:
    """POST /v1/responses; re-sent while a head has not seen the new alias (404)."""
    deadline = time.monotonic() + 30
    while True:
        answer = await http.post(
            "/v1/responses", json=body, headers={"Authorization": f"Bearer {key}"}
        )
        if answer.status_code != 404 or answer.json()["error"]["code"] != "model_not_found":
            return answer
        assert time.monotonic() < deadline, "the route never appeared"
        await asyncio.sleep(0.1)


async def _referencing(http: httpx.AsyncClient, key: str, body: dict[str, Any]) -> httpx.Response:
    """``body`` answered once the items it references are stored (written just after the
    answer that made them left)."""
    deadline = time.monotonic() + 10
    while True:
        answer = await _post(http, key, body)
        if answer.status_code != 404 or time.monotonic() > deadline:
            return answer
        await asyncio.sleep(0.1)


def _events(text: str) -> list[dict[str, Any]]:
    return [json.loads(line[5:]) for line in text.splitlines() if line.startswith("data:")]


def _refused(answer: httpx.Response, item_id: str) -> None:
    assert answer.status_code == 404, answer.text
    error = answer.json()["error"]
    assert error["message"].startswith(f"Item with id '{item_id}' not found.")
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "input"
    assert error["code"] == "item_not_found"


@pytest.mark.asyncio(loop_scope="session")
async def test_turn_two_references_turn_one_and_only_its_tenant_reads_them(
    stack: Stack, upstream: FakeOpenAI, route: str
) -> None:
    team = f"itemref-{secrets.token_hex(4)}"
    key_a, _ = await stack.new_key("itemref-a", team=team)
    key_a2, _ = await stack.new_key("itemref-a2", team=team)
    key_b, _ = await stack.new_key("itemref-b")
    async with httpx.AsyncClient(base_url=stack.tail_url, timeout=30) as http:
        # Turn 1, whole: a message item.
        first = await _post(http, key_a, {"model": route, "input": "remember Paris"})
        assert first.status_code == 200, first.text
        answer = first.json()
        assert answer["store"] is True
        (message,) = answer["output"]
        assert message["type"] == "message"
        # Turn 1, streamed: a function call item, named by the ids the events carried.
        streamed = await _post(
            http,
            key_a,
            {"model": route, "input": "weather there?", "tools": [WEATHER], "stream": True},
        )
        assert streamed.status_code == 200, streamed.text
        events = _events(streamed.text)
        added = [e["item"] for e in events if e["type"] == "response.output_item.added"]
        (call,) = [i for i in added if i["type"] == "function_call"]
        (done,) = [e for e in events if e["type"] == "response.completed"]
        assert [i["id"] for i in done["response"]["output"]] == [call["id"]]
        arguments = done["response"]["output"][0]["arguments"]

        # Turn 2, as the AI SDK sends it: earlier output by reference, from the team's other key.
        turn_two = {
            "model": route,
            "tools": [WEATHER],
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "remember Paris"}]},
                {"type": "item_reference", "id": message["id"]},
                {"role": "user", "content": [{"type": "input_text", "text": "weather there?"}]},
                {"type": "item_reference", "id": call["id"]},
                {"type": "function_call_output", "call_id": call["call_id"], "output": "sunny"},
            ],
        }
        # At once: the model-proxy waits for its own writes of the tenant's items, or reads
        # again a moment later (the AI SDK continues the moment it has its answer).
        second = await _post(http, key_a2, turn_two)
        assert second.status_code == 200, second.text
        sent = upstream.calls_for(MODEL)[-1].body["messages"]
        assert sent == [
            {"role": "user", "content": "remember Paris"},
            {"role": "assistant", "content": "echo: remember Paris"},
            {"role": "user", "content": "weather there?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call["call_id"],
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": arguments},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": call["call_id"], "content": "sunny"},
        ]

        # Another tenant's reference: OpenAI's 404 naming the id, never forwarded.
        calls = len(upstream.calls_for(MODEL))
        for item_id in (message["id"], call["id"], f"msg_{secrets.token_hex(12)}"):
            refused = await _post(
                http,
                key_b,
                {"model": route, "input": [{"type": "item_reference", "id": item_id}]},
            )
            _refused(refused, item_id)
            assert "Paris" not in refused.text
        assert len(upstream.calls_for(MODEL)) == calls


@pytest.mark.asyncio(loop_scope="session")
async def test_an_answer_made_with_store_false_keeps_nothing(
    stack: Stack, upstream: FakeOpenAI, route: str
) -> None:
    key, _ = await stack.new_key("itemref-nostore")
    async with httpx.AsyncClient(base_url=stack.tail_url, timeout=30) as http:
        private = await _post(http, key, {"model": route, "input": "secret", "store": False})
        assert private.status_code == 200, private.text
        assert private.json()["store"] is False
        (unstored,) = private.json()["output"]
        # A stored answer made after it, read back: the writes before it have landed.
        later = await _post(http, key, {"model": route, "input": "public"})
        (stored,) = later.json()["output"]
        check = {"model": route, "input": [{"type": "item_reference", "id": stored["id"]}]}
        assert (await _referencing(http, key, check)).status_code == 200
        calls = len(upstream.calls_for(MODEL))
        refused = await _post(
            http,
            key,
            {"model": route, "input": [{"type": "item_reference", "id": unstored["id"]}]},
        )
        _refused(refused, unstored["id"])
        assert len(upstream.calls_for(MODEL)) == calls


NATIVE = "itemref-native"  # a route to a provider of kind openai: Responses passed through
NATIVE_MODEL = "gpt-itemref"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def native(stack: Stack, upstream: FakeOpenAI) -> AsyncIterator[str]:
    provider = {"kind": "openai", "api_base": f"{upstream.base_url}", "secret": NATIVE}
    stored = await stack.admin("PUT", f"/secrets/{NATIVE}", {"value": "sk-itemref"})
    assert stored.status_code in (200, 201), stored.text
    assert (await stack.admin("PUT", f"/providers/{NATIVE}", provider)).status_code == 200
    route = {"deployments": [{"provider": NATIVE, "model": NATIVE_MODEL}]}
    assert (await stack.admin("PUT", f"/routes/{NATIVE}", route)).status_code == 200
    try:
        yield NATIVE
    finally:
        await stack.admin("DELETE", f"/routes/{NATIVE}")
        await stack.admin("DELETE", f"/providers/{NATIVE}")
        await stack.admin("DELETE", f"/secrets/{NATIVE}?force=true")


@pytest.mark.asyncio(loop_scope="session")
async def test_a_native_deployment_gets_the_kept_items_filled_in(
    stack: Stack, upstream: FakeOpenAI, route: str, native: str
) -> None:
    """A conversation begun on a translating deployment goes on at OpenAI (a self-hosted
    model with OpenAI as its fallback: a head sends a request with references to a native
    deployment when its route has one): the items kept here reach OpenAI filled in, and a
    reference to one of OpenAI's own items is passed on as it is."""
    key, _ = await stack.new_key("itemref-native")
    async with httpx.AsyncClient(base_url=stack.tail_url, timeout=30) as http:
        first = await _post(http, key, {"model": route, "input": "remember Rome"})
        assert first.status_code == 200, first.text
        (message,) = first.json()["output"]
        theirs = f"msg_{secrets.token_hex(12)}"
        turn_two = {
            "model": native,
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "remember Rome"}]},
                {"type": "item_reference", "id": message["id"]},
                {"type": "item_reference", "id": theirs},
                {"role": "user", "content": [{"type": "input_text", "text": "and now?"}]},
            ],
        }
        second = await _post(http, key, turn_two)
        assert second.status_code == 200, second.text
    sent = upstream.calls_for(NATIVE_MODEL)[-1].body["input"]
    assert sent[1]["id"] == message["id"]
    assert sent[1]["type"] == "message"
    assert "echo: remember Rome" in json.dumps(sent[1])
    assert sent[2] == {"type": "item_reference", "id": theirs}
