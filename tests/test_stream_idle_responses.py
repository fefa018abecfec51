"""``timeouts.idle_s`` on a passed-through Responses stream, against a provider on loopback
HTTP: a reasoning item's silent thinking (no summaries: nothing streams until the message)
is no stall, while a stall after the answer's text began still ends the stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from switchyard.errors import ApiError
from switchyard.schemas.routing import Deployment, Provider
from switchyard.workers.modelproxy.providers.base import ProviderCall
from switchyard.workers.modelproxy.providers.passthrough import Passthrough
from tests.scripted_sse import Scripted, Step

pytestmark = pytest.mark.integration

USAGE = {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5}
RESPONSE = {"id": "resp_1", "object": "response", "status": "in_progress", "output": []}


def _ev(kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, **fields}


OPENING: list[Step] = [
    (0, _ev("response.created", response=RESPONSE)),
    (0, _ev("response.in_progress", response=RESPONSE)),
]
REASONING = {"id": "rs_1", "type": "reasoning", "summary": []}
MESSAGE = {"id": "msg_1", "type": "message", "role": "assistant", "content": []}
COMPLETED = _ev("response.completed", response={**RESPONSE, "status": "completed", "usage": USAGE})


@pytest_asyncio.fixture(loop_scope="session")
async def provider() -> AsyncIterator[tuple[Scripted, str]]:
    server = Scripted()
    base = f"http://127.0.0.1:{await server.serve()}/v1"
    yield server, base
    await server.stop()


def _call(base: str) -> ProviderCall:
    return ProviderCall(
        op="responses",
        body={"model": "m", "stream": True, "input": "think hard"},
        stream=True,
        client_wants_usage=False,
        provider=Provider(kind="openai", api_base=base),
        provider_name="scripted",
        deployment=Deployment(provider="scripted", model="m"),
        api_key=None,
        first_token_timeout=10.0,
        total_timeout=20.0,
        idle_timeout=0.5,
    )


async def _events(base: str) -> list[bytes]:
    adapter = Passthrough()
    try:
        return [e.payload async for e in adapter.stream(_call(base)) if e.payload is not None]
    finally:
        await adapter.close()


async def test_silent_reasoning_is_not_idle(provider: tuple[Scripted, str]) -> None:
    """The reasoning item opens, the model thinks 1.5 s without a word (idle_s 0.5), then the
    message streams: it used to be cut 0.5 s after the reasoning item's output_item.added."""
    server, base = provider
    server.script = [
        *OPENING,
        (0, _ev("response.output_item.added", output_index=0, item=REASONING)),
        (1.5, _ev("response.output_item.done", output_index=0, item=REASONING)),
        (0, _ev("response.output_item.added", output_index=1, item=MESSAGE)),
        (0.9, _ev("response.content_part.added", output_index=1, content_index=0)),
        (0, _ev("response.output_text.delta", output_index=1, content_index=0, delta="Hi")),
        (0.2, _ev("response.output_text.done", output_index=1, content_index=0, text="Hi")),
        (0, COMPLETED),
    ]
    events = await _events(base)
    assert any(b"response.completed" in e for e in events)


async def test_a_stall_after_the_text_began_still_ends_the_stream(
    provider: tuple[Scripted, str],
) -> None:
    server, base = provider
    server.script = [
        *OPENING,
        (0, _ev("response.output_item.added", output_index=0, item=MESSAGE)),
        (0, _ev("response.output_text.delta", output_index=0, content_index=0, delta="Hi")),
        (2.0, _ev("response.output_text.delta", output_index=0, content_index=0, delta="!")),
        (0, COMPLETED),
    ]
    with pytest.raises(ApiError) as raised:
        await _events(base)
    assert "none for 0.5 s: timeouts.idle_s" in raised.value.message


async def test_a_slow_consumer_of_a_relayed_comment_is_not_the_providers_silence(
    provider: tuple[Scripted, str],
) -> None:
    """The text began (idle_s 0.5); a proxy's ``: keep-alive`` comes, which the consumer
    takes 1 s to take; the next delta comes 0.2 s after that. The comment is no activity, but
    neither is the time its consumer took: the stream goes on. It was cut at once (its read
    deadline, set at the delta before, had passed while the comment was handed on)."""
    server, base = provider
    server.script = [
        *OPENING,
        (0, _ev("response.output_item.added", output_index=0, item=MESSAGE)),
        (0, _ev("response.output_text.delta", output_index=0, content_index=0, delta="Hi")),
        (0.1, b": keep-alive\n\n"),
        (1.2, _ev("response.output_text.delta", output_index=0, content_index=0, delta="!")),
        (0, COMPLETED),
    ]
    adapter = Passthrough()
    events: list[bytes] = []
    try:
        async for event in adapter.stream(_call(base)):
            if event.payload is not None:
                events.append(event.payload)
                if event.payload.startswith(b":"):
                    await asyncio.sleep(1.0)  # a slow client downstream (back-pressure)
    finally:
        await adapter.close()
    assert any(b": keep-alive" in e for e in events), events
    assert any(b"response.completed" in e for e in events), events
