"""The direct (OpenAI-compatible) stream reader's timers against a provider on loopback HTTP:
the idle clock does not count the time the consumer takes over a chunk (relay back-pressure),
a legacy completion of several prompts is not whole at the first prompt's finish_reason, and
the no-[DONE] grace ends a stream only after 2 s of silence, not 2 s after it began."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from switchyard.errors import ApiError
from switchyard.schemas.routing import Deployment, Provider
from switchyard.workers.modelproxy.providers.base import ProviderCall, StreamEvent
from switchyard.workers.modelproxy.providers.openai_compat import OpenAICompatible
from tests.scripted_sse import Scripted

pytestmark = pytest.mark.integration

USAGE = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}


@pytest_asyncio.fixture(loop_scope="session")
async def provider() -> AsyncIterator[tuple[Scripted, str]]:
    server = Scripted()
    base = f"http://127.0.0.1:{await server.serve()}/v1"
    yield server, base
    await server.stop()


def _call(base: str, op: str, body: dict[str, Any], idle_s: float = 0.0) -> ProviderCall:
    return ProviderCall(
        op=op,
        body={"model": "m", "stream": True, **body},
        stream=True,
        client_wants_usage=True,
        provider=Provider(kind="openai", api_base=base),
        provider_name="scripted",
        deployment=Deployment(provider="scripted", model="m"),
        api_key=None,
        first_token_timeout=10.0,
        total_timeout=20.0,
        idle_timeout=idle_s,
    )


def _chunk(index: int, text: str = "", finish: str | None = None, **extra: Any) -> bytes:
    choice = {"index": index, "text": text, "finish_reason": finish}
    return f"data: {json.dumps({'choices': [choice], **extra})}\n\n".encode()


async def _read(adapter: OpenAICompatible, call: ProviderCall, pause: float = 0.0) -> list[bytes]:
    """The stream's payloads, the consumer taking ``pause`` seconds over each."""
    out: list[bytes] = []
    event: StreamEvent
    async for event in adapter.stream(call):
        if event.payload is not None:
            out.append(event.payload)
        await asyncio.sleep(pause)
    return out


async def test_a_slow_consumer_is_not_a_stalled_provider(provider: tuple[Scripted, str]) -> None:
    """Every chunk comes at once; the consumer takes 0.8 s over each (idle_s 0.5): it used to
    be cut with 'none for 0.5 s: timeouts.idle_s' though the provider never paused."""
    server, base = provider
    server.script = [
        (0, _chunk(0, "a")),
        (0, _chunk(0, "b")),
        (0, _chunk(0, "c", "stop", usage=USAGE)),
        (0, b"data: [DONE]\n\n"),
    ]
    adapter = OpenAICompatible()
    try:
        got = await _read(adapter, _call(base, "complete", {"prompt": "p"}, idle_s=0.5), 0.8)
    finally:
        await adapter.close()
    assert len(got) == 3


async def test_a_completion_of_two_prompts_is_read_to_the_second(
    provider: tuple[Scripted, str],
) -> None:
    """Usage on every chunk (vLLM's continuous_usage_stats) and the first prompt finished: it
    used to be whole there, and the grace ended it 2 s later without the second prompt."""
    server, base = provider
    server.script = [
        (0, _chunk(0, "a", "stop", usage=USAGE)),
        (2.6, _chunk(1, "b", usage=USAGE)),
        (0, _chunk(1, "", "stop", usage=USAGE)),
        (0, b"data: [DONE]\n\n"),
    ]
    adapter = OpenAICompatible()
    try:
        got = await _read(adapter, _call(base, "complete", {"prompt": ["x", "y"]}))
    finally:
        await adapter.close()
    assert len(got) == 3
    assert b'"b"' in got[1]


async def test_the_grace_is_two_seconds_of_silence(provider: tuple[Scripted, str]) -> None:
    """The answer whole (finished, usage in), the provider still sends a chunk every 1.5 s
    and then [DONE]: the grace, set once, ended it 2 s after the finish_reason."""
    server, base = provider
    server.script = [
        (0, _chunk(0, "a", "stop", usage=USAGE)),
        (1.5, _chunk(0, "", None, usage=USAGE)),
        (1.5, _chunk(0, "", None, usage=USAGE)),
        (0, b"data: [DONE]\n\n"),
    ]
    adapter = OpenAICompatible()
    try:
        got = await _read(adapter, _call(base, "complete", {"prompt": "p"}))
    except ApiError as exc:  # (the old code ended it whole: no failure either way)
        pytest.fail(f"the stream failed: {exc.message}")
    finally:
        await adapter.close()
    assert len(got) == 3
