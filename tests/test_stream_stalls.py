"""Streams whose provider misbehaves after it began: what the caller gets, and when.

An explorer's fake providers found three: an opening role-only chunk counted as content, so a
failure right after it reached the client as an error event and the route's other deployment
was never tried; a provider that stalled mid-answer held its client until ``stream_s``, the
edge's keep-alive comments defeating the client's own read timeout; and one that sent the
whole answer and its usage but never ``[DONE]`` nor closed held its client the same way. On
the session stack (real NATS, the fake provider over real HTTP), with routes of this
module's own, removed at the end.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import msgspec
import pytest
import pytest_asyncio
from nats.js.errors import KeyNotFoundError

from switchyard.bus import subjects
from switchyard.schemas.health import PREFIX, Cooldown
from switchyard.schemas.routing import deployment_id
from tests.native_routes import stream_messages, stream_responses
from tests.stacks import Stack

pytestmark = pytest.mark.integration

STALLS = deployment_id("fake", "stall:4000")
ROUTES: dict[str, list[dict[str, Any]]] = {
    # a failing deployment weighs a million times the other: the first attempt goes there
    "s10g-rolereset": [
        {"provider": "fake", "model": "rolereset", "weight": 1_000_000},
        {"provider": "fake", "model": "echo", "weight": 1},
    ],
    "s10g-role503": [
        {"provider": "fake", "model": "role503", "weight": 1_000_000},
        {"provider": "fake", "model": "echo", "weight": 1},
    ],
    # the first sends its role, is heard to have begun (BEGUN_AFTER_S) and fails; the next is
    # slow to begin
    "s10g-role503-slow": [
        {"provider": "fake", "model": "role503:400", "weight": 1_000_000},
        {"provider": "fake", "model": "slow:3500", "weight": 1},
    ],
    "s10g-stall": [{"provider": "fake", "model": "stall:4000", "timeouts": {"idle_s": 1}}],
    "s10g-nodone": [{"provider": "fake", "model": "nodone"}],
}


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def routed(stack: Stack) -> AsyncIterator[Stack]:
    for alias, deployments in ROUTES.items():
        changed = await stack.admin("PUT", f"/routes/{alias}", {"deployments": deployments})
        assert changed.status_code == 200, changed.text
    try:
        yield stack
    finally:
        for alias in ROUTES:
            await stack.admin("DELETE", f"/routes/{alias}")
        await stack.admin("DELETE", f"/deployments/{STALLS}/cooldown")


async def _stream(
    stack: Stack, alias: str, request_id: str, sdk_timeout: str = "", **extra: Any
) -> httpx.Response:
    """One streamed chat request, sent again while a head has not seen the alias yet (404);
    ``sdk_timeout``: its ``X-Stainless-Timeout``."""
    body = {"model": alias, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    headers = {
        "Authorization": f"Bearer {stack.api_key}",
        "X-Request-Timeout": "30",
        "X-Request-Id": request_id,
    }
    if sdk_timeout:
        headers["X-Stainless-Timeout"] = sdk_timeout
    async with httpx.AsyncClient(timeout=60) as http:
        while True:
            resp = await http.post(
                f"{stack.tail_url}/v1/chat/completions", json={**body, **extra}, headers=headers
            )
            if resp.status_code != 404:
                return resp
            await asyncio.sleep(0.1)


def _events(text: str) -> list[Any]:
    return [
        json.loads(line[5:]) if line[5:].strip() != "[DONE]" else "[DONE]"
        for line in text.splitlines()
        if line.startswith("data:")
    ]


async def _cooldown(stack: Stack, dep: str) -> Cooldown | None:
    nc = await stack.connect("provisioner")
    try:
        kv = await nc.jetstream(timeout=10).key_value(subjects.HEALTH_BUCKET)
        try:
            entry = await kv.get(f"{PREFIX}{dep}")
        except KeyNotFoundError:
            return None
        return msgspec.json.decode(entry.value, type=Cooldown) if entry.value else None
    finally:
        await nc.close()


@pytest.mark.parametrize("ask", [stream_messages, stream_responses])
async def test_a_translated_stream_falls_back_after_an_opening_role_chunk(
    routed: Stack, ask: Callable[[Stack, str, str], Awaitable[httpx.Response]]
) -> None:
    """A Messages or Responses request translated to chat: the opening chunk's frames
    (``message_start``, ``response.created``) wait for content too, so the reset after it
    falls back to the echo, and the client's stream opens once."""
    failing = deployment_id("fake", "rolereset")
    await routed.admin("DELETE", f"/deployments/{failing}/cooldown")
    try:
        answer = await ask(routed, "s10g-rolereset", f"s10g-tr-{ask.__name__}")
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-switchyard-attempts"] == "2", answer.text
        assert "event: error" not in answer.text, answer.text
        assert "response.failed" not in answer.text, answer.text
        opened = answer.text.count("event: message_start") + answer.text.count(
            "event: response.created"
        )
        assert opened == 1, answer.text
        assert "echo:" in answer.text, answer.text  # the echo's answer
    finally:
        await routed.admin("DELETE", f"/deployments/{failing}/cooldown")


@pytest.mark.parametrize("alias", ["s10g-rolereset", "s10g-role503"])
async def test_a_failure_after_an_opening_role_chunk_falls_back(routed: Stack, alias: str) -> None:
    """The role-only chunk is held back: the failure after it came before any content, so the
    route's other deployment answers, and the caller gets one opening, the answerer's."""
    failing = deployment_id("fake", alias.removeprefix("s10g-"))
    await routed.admin("DELETE", f"/deployments/{failing}/cooldown")
    try:
        answer = await _stream(routed, alias, f"{alias}-1")
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-switchyard-attempts"] == "2", answer.text
        assert answer.headers["x-switchyard-deployment"] == deployment_id("fake", "echo")
        events = _events(answer.text)
        assert events[-1] == "[DONE]", answer.text
        chunks = [e for e in events if e != "[DONE]"]
        assert not any("error" in e for e in chunks), answer.text
        text = "".join(
            c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]
        )
        assert text == "echo: hi"
        roles = [c for c in chunks if c["choices"] and "role" in c["choices"][0]["delta"]]
        assert len(roles) <= 1, answer.text  # (the echo fake sends none of its own)
    finally:
        await routed.admin("DELETE", f"/deployments/{failing}/cooldown")


async def test_a_stream_stalled_past_idle_s_ends_with_an_error_and_cools(routed: Stack) -> None:
    """``timeouts.idle_s`` 1 s on a provider silent for 4 s after two words: the stream ends
    about a second into the silence, with an error naming the wait and the setting, and the
    deployment cools as for any stream that failed midway."""
    await routed.admin("DELETE", f"/deployments/{STALLS}/cooldown")
    started = time.monotonic()
    answer = await _stream(routed, "s10g-stall", "s10g-stall-1")
    took = time.monotonic() - started
    assert answer.status_code == 200, answer.text
    assert "half" in answer.text  # the answer had begun
    errors = [e for e in _events(answer.text) if isinstance(e, dict) and "error" in e]
    assert errors, answer.text
    message = errors[0]["error"]["message"]
    assert "none for 1 s: timeouts.idle_s" in message, message
    assert errors[0]["error"]["code"] == "provider_timeout"
    assert took < 3.5, took  # the provider's silence alone lasts 4 s
    deadline = time.monotonic() + 30
    while (entry := await _cooldown(routed, STALLS)) is None:
        assert time.monotonic() < deadline, "the stalled deployment was not cooled"
        await asyncio.sleep(0.1)
    assert entry.reason.startswith(f"{STALLS}: "), entry


async def test_a_whole_answer_without_done_ends_after_a_grace(routed: Stack) -> None:
    """Every choice finished and the usage came, then nothing (no ``[DONE]``, no end): the
    stream ends a grace later as if ``[DONE]`` had come, billed for the usage received."""
    started = time.monotonic()
    answer = await asyncio.wait_for(
        _stream(routed, "s10g-nodone", "s10g-nodone-1", stream_options={"include_usage": True}),
        timeout=20,
    )
    took = time.monotonic() - started
    assert answer.status_code == 200, answer.text
    events = _events(answer.text)
    assert events[-1] == "[DONE]", answer.text
    assert not any(isinstance(e, dict) and "error" in e for e in events), answer.text
    assert took < 10, took
    usage = [e["usage"] for e in events if isinstance(e, dict) and e.get("usage")]
    assert usage, answer.text
    assert usage[-1]["completion_tokens"] == 2, answer.text
    billed = await routed.usage_of("s10g-nodone-1")
    assert billed is not None
    assert (billed.prompt_tokens, billed.completion_tokens) == (7, 2)
    assert billed.prompt_tokens_estimated == 0, billed


async def test_a_begun_before_a_reroute_does_not_start_the_next_deployments_stream(
    routed: Stack,
) -> None:
    """The first deployment sends its role (the edge hears the provider began) and fails; the
    head reroutes to one that has not begun by the SDK's ``X-Stainless-Timeout`` (2 s): the
    answer is the 504 the SDK retries. The first deployment's begun started the stream (a 200
    and its headers at 1 s) when the edge kept it across the reroute (a review)."""
    failing = deployment_id("fake", "role503:400")
    await routed.admin("DELETE", f"/deployments/{failing}/cooldown")
    try:
        answer = await _stream(routed, "s10g-role503-slow", "s10g-moved-1", sdk_timeout="2")
        assert answer.status_code == 504, answer.text
        assert answer.json()["error"]["code"] == "deadline_exceeded", answer.text
        assert "X-Stainless-Timeout" in answer.json()["error"]["message"], answer.text
    finally:
        await routed.admin("DELETE", f"/deployments/{failing}/cooldown")
